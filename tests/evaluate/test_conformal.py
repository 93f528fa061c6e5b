"""crepes' conformal predictive system on a head's mean and std, scored out of sample."""

from __future__ import annotations

import numpy as np
import pytest


def _stars(n, seed, heavy=True):
    rng = np.random.default_rng(seed)
    std = rng.uniform(0.2, 2.0, n)  # the base head's spread, right in rank but not in shape
    noise = rng.standard_t(3, n) if heavy else rng.normal(size=n)
    return np.zeros(n), std, std * noise


def test_conformal_intervals_hold_their_level_out_of_sample_where_a_gaussian_does_not():
    from stellarexp.evaluate.conformal import conformal_out_of_sample, score_conformal
    from stellarexp.evaluate.mixture import Mixture

    mean, std, y = _stars(2000, 0)
    c = conformal_out_of_sample({"val": mean}, {"val": std}, {"val": y}, seed=1)
    s = score_conformal(c)
    assert s["n"] == 2000 and c.subset == "val" and sorted(c.index) == list(range(2000))
    assert abs(s["coverage95"] - 0.95) < 0.015 and abs(s["coverage68"] - 0.68) < 0.03
    assert s["coverage95_ok"] == 1.0
    # the Gaussian of the same std misses a Student-t(3) noise's 68% (its std is sqrt(3) x)
    lo, hi = Mixture.gaussian(mean, std).interval(0.68)
    assert np.mean((y >= lo) & (y <= hi)) < 0.63
    assert 0 < s["crps"] < np.mean(std) and s["interval_score95"] >= s["width95"]


def test_holdout_fits_on_val_and_scores_test_only():
    from stellarexp.evaluate.conformal import conformal_out_of_sample, score_conformal

    mv, sv, yv = _stars(1000, 2, heavy=False)
    mt, st, yt = _stars(500, 3, heavy=False)
    yt[:3] = np.nan  # missing labels are not scored
    c = conformal_out_of_sample({"val": mv, "test": mt}, {"val": sv, "test": st},
                                {"val": yv, "test": yt})
    assert c.subset == "test" and len(c.y) == 500 and "fitted on val" in c.scheme
    s = score_conformal(c)
    assert s["n"] == 497 and 0.92 < s["coverage95"] < 0.98
    # half-widths follow the normaliser
    lo, hi = c.intervals[0.95]
    assert np.corrcoef(hi - lo, st)[0, 1] > 0.99


def test_too_few_fitting_stars_is_an_error():
    from stellarexp.evaluate.conformal import fit_system

    with pytest.raises(ValueError, match="at least 2 fitting stars"):
        fit_system([1.0, np.nan], [0.0, 0.0], [1.0, 1.0])


def test_a_half_too_small_for_a_finite_95_percent_interval_is_refused():
    from stellarexp.evaluate.conformal import conformal_out_of_sample

    mean, std, y = _stars(70, 4)  # halves of 35 stars: the 97.5th percentile needs 39
    with pytest.raises(ValueError, match="too few for a finite 95% conformal interval"):
        conformal_out_of_sample({"val": mean}, {"val": std}, {"val": y})


def test_scores_scale_with_the_label_units():
    from stellarexp.evaluate.conformal import conformal_out_of_sample, score_conformal

    mean, std, y = _stars(800, 5)
    s1 = score_conformal(conformal_out_of_sample({"val": mean}, {"val": std}, {"val": y}))
    sk = score_conformal(conformal_out_of_sample({"val": 5000 + 1000 * mean}, {"val": 1000 * std},
                                                 {"val": 5000 + 1000 * y}))
    assert sk["coverage95"] == s1["coverage95"] and sk["coverage68"] == s1["coverage68"]
    for k in ("width95", "crps", "interval_score95"):
        assert sk[k] == pytest.approx(1000 * s1[k], rel=1e-6), k
    for k in ("nll", "fit_nll_fold0", "fit_nll_fold1"):  # a density in units 1000 x larger
        assert sk[k] == pytest.approx(s1[k] + np.log(1000), rel=1e-9), k


def test_the_crps_is_the_conformal_distributions_as_crepes_scores_it_at_unit_scale():
    """At std 1 crepes' own CRPS is exact; ours (scoringrules' ensemble CRPS on mean + std x
    residuals) must equal it there, per star and on average."""
    from stellarexp.evaluate.conformal import fit_conformal, predictive_scores

    rng = np.random.default_rng(6)
    system, density, _ = fit_conformal(rng.standard_t(4, 300), np.zeros(300), np.ones(300))
    mean, y = rng.normal(size=200), rng.normal(size=200) * 2
    _, crps = predictive_scores(system, y, mean, np.ones(200), density)
    theirs = system.evaluate(mean, y, sigmas=np.ones(200), metrics=["CRPS"])["CRPS"]
    assert np.mean(crps) == pytest.approx(theirs, rel=1e-9)


def test_the_smoothed_density_integrates_to_one_in_label_units():
    from stellarexp.evaluate.conformal import fit_conformal, predictive_scores

    rng = np.random.default_rng(7)
    system, density, _ = fit_conformal(rng.standard_t(3, 500) * 3.0, np.zeros(500), np.full(500, 3.0))
    grid = np.linspace(-4000.0, 6000.0, 20_001)  # a star of mean 1000, std 250
    nll, _ = predictive_scores(system, grid, np.full(len(grid), 1000.0), np.full(len(grid), 250.0),
                               density)
    assert np.trapezoid(np.exp(-nll), grid) == pytest.approx(1.0, abs=1e-3)


def test_heavy_tailed_errors_the_conformal_density_fits_better_and_its_fitting_nll_is_honest():
    """Student-t(3) errors around a right-in-rank std: the conformal density's out-of-sample NLL
    beats the recalibrated Gaussian's, and its cross-validated fitting NLL predicts that
    out-of-sample NLL (a kernel scored on its own residuals would look better than it is)."""
    from stellarexp.evaluate.conformal import (
        ResidualDensity,
        conformal_out_of_sample,
        score_conformal,
    )
    from stellarexp.evaluate.mixture import Mixture
    from stellarexp.evaluate.out_of_sample import out_of_sample, score

    mean, std, y = _stars(3000, 8)
    s = score_conformal(conformal_out_of_sample({"val": mean}, {"val": std}, {"val": y}, seed=2))
    oos = out_of_sample({"val": Mixture.gaussian(mean, std)}, {"val": y}, method="variance", seed=2)
    gauss = score(oos.recalibrated, oos.y)
    assert s["nll"] < gauss["nll"] - 0.03
    for k in (0, 1):
        assert abs(s[f"fit_nll_fold{k}"] - s["nll"]) < 0.1
        assert s[f"fit_nll_fold{k}"] < oos.fit_nll[k]  # chosen over the Gaussian on fitting stars
    z = y / std
    in_sample = float(np.mean(np.log(std) - ResidualDensity.fit(z).log_pdf(z)))
    assert in_sample < np.mean([s["fit_nll_fold0"], s["fit_nll_fold1"]])


def test_gaussian_errors_the_gaussian_is_not_beaten_on_fitting_stars():
    """With Gaussian errors the smoothed density has nothing to gain: on fitting stars (both
    cross-validated) the conformal NLL is no better than the recalibrated Gaussian's by more
    than noise, so the choice does not drift towards the more flexible method."""
    from stellarexp.evaluate.conformal import conformal_out_of_sample, score_conformal
    from stellarexp.evaluate.mixture import Mixture
    from stellarexp.evaluate.out_of_sample import out_of_sample

    mean, std, y = _stars(3000, 9, heavy=False)
    s = score_conformal(conformal_out_of_sample({"val": mean}, {"val": std}, {"val": y}, seed=3))
    oos = out_of_sample({"val": Mixture.gaussian(mean, std)}, {"val": y}, method="variance", seed=3)
    for k in (0, 1):
        assert s[f"fit_nll_fold{k}"] > oos.fit_nll[k] - 0.01


def test_a_residual_beyond_the_fitting_ones_costs_tens_of_nats_not_hundreds():
    from stellarexp.evaluate.conformal import ResidualDensity

    z = np.random.default_rng(10).normal(size=400)
    density = ResidualDensity.fit(z)
    guarded = -density.log_pdf(np.array([10.0]))[0]
    kernel_only = -density.kernel.score_samples(np.array([[10.0]]))[0]
    assert guarded < 70 and kernel_only > 2 * guarded  # z = 10 beyond 400 N(0, 1) residuals
    grid = np.linspace(-30, 30, 60_001)
    assert np.trapezoid(np.exp(density.log_pdf(grid)), grid) == pytest.approx(1.0, abs=1e-4)


def test_a_residual_density_needs_enough_stars_for_its_folds():
    from stellarexp.evaluate.conformal import ResidualDensity

    with pytest.raises(ValueError, match="at least 10 fitting stars"):
        ResidualDensity.fit(np.arange(6.0))
