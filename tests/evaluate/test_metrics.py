"""Uncertainty, classification and logg-subset metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stellarexp.evaluate import metrics as mt
from stellarexp.evaluate.calibration import Recalibration


def test_coverage_width_nll_crps_spearman_by_hand():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    assert mt.coverage(y, [-1, 1.5, 1, 2.5], [1, 2, 3, 2.9]) == 0.5
    assert mt.coverage([0.0, np.nan], [-1, -1], [1, 1]) == 1.0  # NaN label dropped
    # N(0, 2^2) at y = 1: 0.5 log(2 pi 4) + 0.5 (1/2)^2
    assert mt.gaussian_nll([1.0], [0.0], [2.0]) == pytest.approx(
        0.5 * math.log(8 * math.pi) + 0.125)
    # CRPS of N(0, 1) at its mean: 2 phi(0) - 1/sqrt(pi) = sqrt(2/pi) - 1/sqrt(pi)
    assert mt.gaussian_crps([0.0], [0.0], [1.0]) == pytest.approx(0.2336949772, rel=1e-8)
    # it scales with sigma and tends to the absolute error for a sharp forecast
    assert mt.gaussian_crps([0.0], [0.0], [3.0]) == pytest.approx(3 * 0.2336949772)
    assert mt.gaussian_crps([5.0], [2.0], [1e-6]) == pytest.approx(3.0, abs=1e-5)
    # |err| ranks 1 2 3 4, std ranks 1 3 2 4: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert mt.error_spearman([0, 0, 0, 0], [1, -2, 3, 4], [0.1, 0.3, 0.2, 0.4]) == pytest.approx(0.8)
    assert math.isnan(mt.error_spearman([0, 0, 0], [1, 2, 3], [1, 1, 1]))  # constant std


def test_uncertainty_metrics_and_calibration_curve():
    y = np.array([-2.0, -0.5, 0.2, 1.5])
    zero, one = np.zeros(4), np.ones(4)
    # |y| <= z(0.5) = 0.674: two of four; |y| <= z(0.9) = 1.645: three of four
    np.testing.assert_allclose(mt.calibration_curve(y, zero, one, [0.5, 0.9]), [0.5, 0.75])
    m = mt.uncertainty_metrics(y, zero, one)
    assert m["coverage68"] == 0.5  # z(0.68) = 0.994
    assert m["coverage95"] == 0.75  # z(0.95) = 1.96
    assert m["width95"] == pytest.approx(2 * 1.959964, rel=1e-6)
    assert m["width68"] == pytest.approx(2 * 0.994458, rel=1e-5)
    assert m["nll"] == pytest.approx(0.5 * math.log(2 * math.pi) + 0.5 * np.mean(y ** 2))
    # an explicit interval is used as given
    m = mt.uncertainty_metrics(y, zero, one, interval=lambda level: (y - 1, y + 1))
    assert m["coverage68"] == m["coverage95"] == 1.0 and m["width95"] == 2.0


def test_uncertainty_report_names_raw_and_calibrated():
    y = np.array([[4.5], [4.2], [2.0], [2.5]])
    mean = np.array([[4.4], [4.0], [3.0], [2.5]])
    std = np.full((4, 1), 0.05)
    recal = Recalibration(["logg"], method="variance", scale=np.array([10.0]))
    m = mt.uncertainty_report(y, mean, std, ["logg"], "val", recalibration=recal, logg=y[:, 0])
    # raw 95% half width 0.098: only the exact prediction is covered; x10: 0.98 covers 3 of 4
    assert m["val/coverage95_raw_logg"] == 0.25 and m["val/coverage95_cal_logg"] == 0.75
    assert m["val/coverage95_cal_dwarf_logg"] == 1.0 and m["val/coverage95_cal_giant_logg"] == 0.5
    assert m["val/coverage95_raw_giant_logg"] == 0.5 and m["val/coverage95_raw_dwarf_logg"] == 0.0
    assert m["val/width95_cal_logg"] == pytest.approx(10 * m["val/width95_raw_logg"])


def test_classification_metrics_by_hand():
    # TP 1, FP 1, FN 2, TN 1
    m = mt.classification_metrics([1, 1, 1, 0, 0, np.nan], [1, 0, 0, 1, 0, 1])
    assert m == pytest.approx({"accuracy": 0.4, "precision": 0.5, "recall": 1 / 3})
    assert math.isnan(mt.classification_metrics([0, 0], [0, 0])["precision"])
    with pytest.raises(ValueError, match="no labelled"):
        mt.classification_metrics([np.nan], [1])


def test_logg_subsets_and_their_residual_metrics():
    logg = np.array([4.5, 4.0, 2.0, np.nan, 4.8])
    parts = mt.logg_subsets(logg)
    assert parts["dwarf"].tolist() == [True, False, False, False, True]
    assert parts["giant"].tolist() == [False, True, True, False, False]
    y = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    pred = y + np.array([1.0, -2.0, 4.0, 100.0, 3.0])
    m = mt.subset_regression_metrics(y, pred, logg, "val", "teff", n_boot=0)
    assert m["val/bias_dwarf_teff"] == pytest.approx(2.0)  # residuals 1, 3
    assert m["val/sigma_dwarf_teff"] == pytest.approx(1.0)
    assert m["val/mae_giant_teff"] == pytest.approx(3.0)  # residuals -2, 4
    assert m["val/rmse_giant_teff"] == pytest.approx(math.sqrt(10.0))
    assert "val/sigma_teff" not in m
