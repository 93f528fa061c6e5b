"""Out-of-sample uncertainty scoring: mixtures, cross-fitting, scores, the ranking ceiling."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from stellarexp.evaluate.metrics import gaussian_crps
from stellarexp.evaluate.mixture import Mixture, fit_scale
from stellarexp.evaluate.out_of_sample import (
    binned_errors,
    binomial_range,
    out_of_sample,
    reliability,
    score,
)


def test_a_one_component_mixture_scores_as_the_gaussian():
    rng = np.random.default_rng(0)
    m, s, y = rng.normal(size=50), rng.uniform(0.5, 2.0, 50), rng.normal(size=50)
    g = Mixture.gaussian(m, s)
    np.testing.assert_allclose(g.nll(y), -norm.logpdf(y, m, s), rtol=1e-10)
    assert np.mean(g.crps(y)) == pytest.approx(gaussian_crps(y, m, s), rel=1e-9)
    _, hi = g.interval(0.95)
    np.testing.assert_allclose(hi, m + 1.959964 * s, rtol=1e-6)
    np.testing.assert_allclose(g.quantile(0.975), hi, rtol=1e-9, atol=1e-9)


def test_a_two_stage_mixture_is_bimodal_where_the_classifier_is_unsure():
    n = 200_000
    mix = Mixture.two_stage([0.5, 0.99], (np.array([4.5, 4.5]), np.array([0.2, 0.2])),
                            (np.array([2.5, 2.5]), np.array([0.4, 0.4])))
    rng = np.random.default_rng(1)
    draws = np.where(rng.random((n, 2)) < [0.5, 0.99], rng.normal(4.5, 0.2, (n, 2)), rng.normal(2.5, 0.4, (n, 2)))
    lo, hi = mix.interval(0.95)
    np.testing.assert_allclose(lo, np.quantile(draws, 0.025, axis=0), atol=0.01)
    np.testing.assert_allclose(hi, np.quantile(draws, 0.975, axis=0), atol=0.01)
    np.testing.assert_allclose(mix.mean, draws.mean(0), atol=0.01)
    np.testing.assert_allclose(mix.std, draws.std(0), atol=0.01)
    np.testing.assert_allclose(mix.prob_above(4.0), (draws > 4.0).mean(0), atol=0.005)
    width = hi - lo
    assert width[0] > 2.5 and width[1] < 1.0  # unsure: spans both groups; sure: one head's width
    # the mixture's density at a label between the modes is low: NLL there exceeds a Gaussian's
    gauss = Mixture.gaussian(mix.mean, mix.std)
    assert mix.nll([3.5, 3.5])[0] > gauss.nll([3.5, 3.5])[0]


def test_fit_scale_recovers_a_known_factor_for_gaussians_and_mixtures():
    rng = np.random.default_rng(2)
    n = 20_000
    s = rng.uniform(0.5, 1.5, n)
    y = 3.0 * s * rng.normal(size=n)
    assert fit_scale(Mixture.gaussian(np.zeros(n), s), y) == pytest.approx(3.0, rel=0.03)
    p = rng.uniform(0, 1, n)
    pick = rng.random(n) < p
    y2 = np.where(pick, 4.5 + 2.0 * 0.2 * rng.normal(size=n), 2.5 + 2.0 * 0.3 * rng.normal(size=n))
    mix = Mixture.two_stage(p, (np.full(n, 4.5), np.full(n, 0.2)), (np.full(n, 2.5), np.full(n, 0.3)))
    assert fit_scale(mix, y2) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="no star"):
        fit_scale(Mixture.gaussian([0.0], [1.0]), [np.nan])


def _calibrated(n, seed):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=n)
    std = rng.uniform(0.2, 1.0, n)  # varies 5x
    mean = truth + std * rng.normal(size=n)
    label = truth + 0.05 * rng.normal(size=n)
    return mean, std, label, truth


def test_cross_fitting_scores_every_star_with_a_factor_fitted_without_it():
    mean, std, y, _ = _calibrated(600, 3)
    preds = {"val": Mixture.gaussian(mean, 0.1 * std)}  # 10x too narrow
    oos = out_of_sample(preds, {"val": y}, method="variance", seed=0)
    assert sorted(oos.index.tolist()) == list(range(600)) and "cross-fitted halves" in oos.scheme
    assert all(k == pytest.approx(10.0, rel=0.15) for k in oos.scales)
    # a label of the first scored half changes only the factor fitted on that half (applied to
    # the other half), never its own stars' factor
    first = oos.index[0]
    y2 = y.copy()
    y2[first] += 1e3
    again = out_of_sample(preds, {"val": y2}, method="variance", seed=0)
    own = np.flatnonzero(oos.index == first)[0]
    assert again.recalibrated.stds[own, 0] == pytest.approx(oos.recalibrated.stds[own, 0])
    assert not np.allclose(again.recalibrated.stds, oos.recalibrated.stds)


def test_holdout_fits_on_val_and_scores_test():
    mean, std, y, _ = _calibrated(800, 4)
    preds = {"val": Mixture.gaussian(mean[:400], std[:400]), "test": Mixture.gaussian(mean[400:], std[400:])}
    labels = {"val": y[:400], "test": y[400:]}
    oos = out_of_sample(preds, labels, method="conformal", seed=0)
    assert oos.subset == "test" and len(oos.y) == 400 and "scored on test" in oos.scheme
    changed = dict(labels, test=labels["test"] + 5.0)
    assert out_of_sample(preds, changed, method="conformal").scales == oos.scales


def test_scores_of_a_calibrated_predictive_and_of_an_overconfident_one():
    mean, std, y, truth = _calibrated(3000, 5)
    good = score(Mixture.gaussian(mean, std), y, truth)
    lo, hi = binomial_range(3000)
    assert lo < 0.95 < hi and good["coverage95_lo"] == lo
    assert good["coverage95_ok"] == 1.0 and abs(good["coverage68"] - 0.68) < 0.03
    assert good["spearman_truth"] > 0.3 and good["spearman"] > 0.3
    bad = score(Mixture.gaussian(mean, 0.5 * std), y, truth)
    assert bad["coverage95_ok"] == 0.0 and bad["nll"] > good["nll"]
    assert bad["crps"] > good["crps"] and bad["width95"] == pytest.approx(0.5 * good["width95"])
    levels = np.array([0.5, 0.9])
    np.testing.assert_allclose(reliability(Mixture.gaussian(mean, std), y, levels), levels, atol=0.03)
    b = binned_errors(Mixture.gaussian(mean, std), truth, n_bins=5)
    assert np.all(np.diff(b["std"]) > 0) and np.allclose(b["rmse"], b["std"], rtol=0.2)


def test_binomial_range_at_600_stars():
    lo, hi = binomial_range(600)
    assert 0.93 <= lo <= 0.935 and 0.965 <= hi <= 0.97


def test_the_ranking_ceiling_sees_what_the_inputs_say_about_errors():
    from stellarexp.evaluate.ranking_ceiling import ceiling_features, ceiling_rho

    rng = np.random.default_rng(6)
    n = 1500
    stars = pd.DataFrame({f"{k}_{b}": rng.uniform(15, 18, n) if k == "psfmag" else rng.uniform(0.01, 0.1, n)
                          for k in ("psfmag", "psfmagerr", "extinction") for b in "ugriz"})
    feats = ceiling_features(stars)
    assert {"u_g", "i_z_err"} <= set(feats.columns)
    tied = np.abs(rng.normal(size=n)) * stars["psfmagerr_u"].to_numpy() * 10  # errors follow u's error
    assert ceiling_rho(feats, tied) > 0.4
    assert abs(ceiling_rho(feats, np.abs(rng.normal(size=n)))) < 0.1
    with pytest.raises(ValueError, match="psfmag_u"):
        ceiling_features(stars.drop(columns="psfmag_u"))


def test_too_few_fitting_stars_for_a_conformal_95_factor_give_an_infinite_one():
    mean, std, y, _ = _calibrated(21, 7)
    oos = out_of_sample({"val": Mixture.gaussian(mean, std)}, {"val": y}, method="conformal", seed=0)
    assert all(np.isinf(k) for k in oos.scales)  # 10 and 11 stars: ceil(0.95 (n + 1)) > n
    assert np.isfinite(out_of_sample({"val": Mixture.gaussian(mean, std)}, {"val": y},
                                     method="variance", seed=0).scales).all()
    with pytest.raises(ValueError, match="at least 4"):
        out_of_sample({"val": Mixture.gaussian(mean[:3], std[:3])}, {"val": y[:3]})


def test_the_fitting_nll_scores_each_fitting_star_with_a_factor_fitted_without_it():
    """A method is chosen by its fitting stars' NLL; the factor is fitted on four fifths and
    scores the fifth, so a recalibration is not credited for stars it was fitted on."""
    from sklearn.model_selection import KFold

    from stellarexp.evaluate.mixture import Mixture, fit_scale
    from stellarexp.evaluate.out_of_sample import fitting_nll

    rng = np.random.default_rng(11)
    n = 300
    std = rng.uniform(0.5, 2.0, n)
    y = std * rng.standard_t(3, n)
    y[:7] = np.nan  # unlabelled stars are neither fitted nor scored
    pred = Mixture.gaussian(np.zeros(n), std)
    ok = np.flatnonzero(np.isfinite(y))
    expected = np.empty(len(ok))
    for fit, held in KFold(5, shuffle=True, random_state=4).split(ok):
        k = fit_scale(pred.subset(ok[fit]), y[ok[fit]])
        expected[held] = pred.subset(ok[held]).scaled(k).nll(y[ok[held]])
    got = fitting_nll(pred, y, "variance", 0.95, seed=4)
    assert got == pytest.approx(expected.mean())
    in_sample = np.mean(pred.subset(ok).scaled(fit_scale(pred.subset(ok), y[ok])).nll(y[ok]))
    assert got > in_sample  # the maximum-likelihood factor is best on its own stars
    assert np.isnan(fitting_nll(pred.subset(np.arange(12)), y[:12], "variance", 0.95))
