"""Recalibration of predictive uncertainties (stellarexp.evaluate.calibration)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stellarexp.evaluate.calibration import (
    Recalibration,
    conformal_quantile,
    fit_recalibration,
    z_value,
)
from stellarexp.evaluate.metrics import coverage


def _miscalibrated(n, rng, *, tails="gaussian"):
    """Predictions whose raw std is 12x too small for teff and 3x too large for logg."""
    mean = np.column_stack([rng.uniform(4000, 7000, n), rng.uniform(1, 5, n)])
    raw = np.column_stack([rng.uniform(5, 15, n), rng.uniform(0.1, 0.4, n)])
    true_sd = raw * np.array([12.0, 1 / 3])
    noise = rng.standard_normal((n, 2)) if tails == "gaussian" else rng.standard_t(3, (n, 2))
    return mean, raw, mean + true_sd * noise


def _cov(recal, mean, std, y, level):
    lo, hi = recal.interval(mean, std, level)
    return [coverage(y[:, j], lo[:, j], hi[:, j]) for j in range(y.shape[1])]


@pytest.mark.parametrize("method", ["variance", "conformal"])
def test_recalibration_reaches_nominal_coverage_on_test_data(method):
    rng = np.random.default_rng(1)
    val = _miscalibrated(4000, rng)
    test = _miscalibrated(4000, rng)
    recal = fit_recalibration(*val, ["teff", "logg"], method=method)
    raw = Recalibration(["teff", "logg"])  # identity
    before = _cov(raw, *test, 0.95)
    assert before[0] < 0.2 and before[1] > 0.999  # far too narrow / far too wide
    for level in (0.68, 0.95):
        after = _cov(recal, *test, level)
        assert after == pytest.approx([level, level], abs=0.02), (level, after)
    # the fitted scale recovers the simulated miscalibration
    assert recal.scale == pytest.approx([12.0, 1 / 3], rel=0.05)
    assert recal.std(test[1]) == pytest.approx(test[1] * recal.scale[None, :])


def test_conformal_covers_heavy_tails_where_variance_scaling_does_not():
    rng = np.random.default_rng(2)
    val = _miscalibrated(5000, rng, tails="student")
    test = _miscalibrated(5000, rng, tails="student")
    conf = fit_recalibration(*val, ["teff", "logg"], method="conformal", level=0.68)
    var = fit_recalibration(*val, ["teff", "logg"], method="variance")
    for level in (0.68, 0.95):
        assert _cov(conf, *test, level) == pytest.approx([level, level], abs=0.02)
    # Student-t(3): the variance is dominated by the tails, so the 68% Gaussian interval
    # over-covers by far
    assert min(_cov(var, *test, 0.68)) > 0.75


def test_exact_values_and_finite_sample_correction():
    # variance: s^2 = mean(z^2) = (1 + 9) / 2
    recal = fit_recalibration([[0.0], [0.0]], [[1.0], [1.0]], [[1.0], [-3.0]], ["teff"])
    assert recal.scale[0] == pytest.approx(math.sqrt(5.0))
    lo, hi = recal.interval([[10.0]], [[2.0]], 0.95)
    assert hi[0, 0] - 10.0 == pytest.approx(1.959964 * math.sqrt(5.0) * 2.0, rel=1e-6)
    # conformal: the ceil((n + 1) level)-th smallest of n scores
    scores = np.arange(1.0, 20.0)  # n = 19
    assert conformal_quantile(scores, 0.9) == 18.0  # ceil(20 * 0.9) = 18
    assert conformal_quantile(scores, 0.5) == 10.0  # ceil(10) = 10
    assert math.isinf(conformal_quantile(scores, 0.96))  # ceil(19.2) = 20 > 19
    y = scores[:, None]  # mean 0, std 1: score = y
    conf = fit_recalibration(np.zeros_like(y), np.ones_like(y), y, ["logg"], "conformal", 0.9)
    assert conf.scale[0] == pytest.approx(18.0 / z_value(0.9))
    lo, hi = conf.interval([[0.0]], [[0.5]], 0.5)
    assert (lo[0, 0], hi[0, 0]) == (-5.0, 5.0)
    assert z_value(0.68) == pytest.approx(0.994458, rel=1e-5)


@pytest.mark.parametrize("method", ["variance", "conformal", "none"])
def test_round_trip_through_json(method):
    rng = np.random.default_rng(3)
    mean, std, y = _miscalibrated(300, rng)
    recal = fit_recalibration(mean, std, y, ["teff", "logg"], method=method)
    back = Recalibration.from_dict(json.loads(json.dumps(recal.to_dict())))
    assert back.targets == ["teff", "logg"] and back.method == method
    for level in (0.5, 0.68, 0.95):
        for a, b in zip(recal.interval(mean, std, level), back.interval(mean, std, level)):
            np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(back.std(std), recal.std(std))
    if method == "none":
        np.testing.assert_allclose(back.std(std), std)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"std must be \[N, 2\]"):
        fit_recalibration(np.zeros((5, 2)), np.ones(5), np.zeros((5, 2)), ["teff", "logg"])
    with pytest.raises(ValueError, match="method must be one of"):
        fit_recalibration(np.zeros((5, 1)), np.ones((5, 1)), np.zeros((5, 1)), ["teff"],
                          method="isotonic")
    with pytest.raises(ValueError, match="'fe_h': no validation star"):
        fit_recalibration(np.zeros((3, 1)), np.ones((3, 1)), np.full((3, 1), np.nan), ["fe_h"])
    with pytest.raises(ValueError, match="is it a recalibration.json"):
        Recalibration.from_dict({"targets": ["teff"]})
    # non-finite or zero std rows are left out of the fit, not poisoning it
    recal = fit_recalibration([[0.0], [0.0], [0.0]], [[1.0], [0.0], [np.nan]],
                              [[2.0], [5.0], [5.0]], ["teff"])
    assert recal.scale[0] == pytest.approx(2.0) and recal.n == [1]
