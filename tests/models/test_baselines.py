"""Features, metrics and the tree-model factory of the baselines."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from stellarexp.data import features as F
from stellarexp.evaluate import metrics as M
from stellarexp.models import baselines as B
from tests.support.train import make_stars


def test_colour_order_is_the_papers():
    assert F.COLOR_FEATURES == ("u-g", "u-r", "u-i", "u-z", "g-r", "g-i", "g-z", "r-i", "r-z", "i-z")
    # every band pair, bluer band first, in band order
    assert F.COLOR_PAIRS == tuple(itertools.combinations("ugriz", 2))


def test_magnitudes_are_extinction_corrected():
    stars = pd.DataFrame({f"psfmag_{b}": [20.0 + k] for k, b in enumerate("ugriz")}
                         | {f"extinction_{b}": [0.1 * (k + 1)] for k, b in enumerate("ugriz")})
    mags = F.features(stars, "mag")
    assert list(mags.columns) == ["u0", "g0", "r0", "i0", "z0"]
    np.testing.assert_allclose(mags.iloc[0], [19.9, 20.8, 21.7, 22.6, 23.5])
    colors = F.features(stars, "color")
    # u0 - g0 = 19.9 - 20.8
    assert colors.loc[0, "u-g"] == pytest.approx(-0.9)
    assert colors.loc[0, "i-z"] == pytest.approx(22.6 - 23.5)


def test_colours_given_directly_are_used_and_missing_magnitudes_are_explained():
    stars = pd.DataFrame({c: [float(i)] for i, c in enumerate(F.COLOR_FEATURES)})
    assert F.features(stars, "color").iloc[0].tolist() == list(map(float, range(10)))
    with pytest.raises(KeyError, match="psfmag_u"):
        F.features(stars, "mag")
    with pytest.raises(ValueError, match="unknown feature set"):
        F.features(stars, "flux")


def test_metrics_against_hand_computed_values():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([1.5, 1.5, 3.0, 6.0])  # residuals 0.5, -0.5, 0, 2
    got = M.residual_metrics(y_pred - y_true)
    assert got["bias"] == pytest.approx(0.5)
    assert got["mae"] == pytest.approx(0.75)
    assert got["rmse"] == pytest.approx(np.sqrt((0.25 + 0.25 + 0 + 4) / 4))
    assert got["sigma"] == pytest.approx(np.sqrt(((0) ** 2 + 1 + 0.25 + 2.25) / 4))
    # median 0.25; |r - 0.25| = 0.25, 0.75, 0.25, 1.75 -> median 0.5
    assert got["robust_sigma"] == pytest.approx(1.4826 * 0.5)


def test_bootstrap_interval_brackets_the_value_and_is_reproducible():
    rng = np.random.default_rng(1)
    y = rng.normal(size=400)
    pred = y + rng.normal(scale=2.0, size=400)
    est = M.evaluate_regression(y, pred, n_boot=300, level=0.68, seed=3)
    for e in est.values():
        assert e.lo <= e.value <= e.hi
    assert est["sigma"].value == pytest.approx(2.0, rel=0.15)
    # the 68% interval of a std from 400 points is about +-sigma/sqrt(2n) wide
    assert 0.5 * 2.0 / np.sqrt(800) < (est["sigma"].hi - est["sigma"].lo) / 2 < 2.0 * 2.0 / np.sqrt(800)
    again = M.evaluate_regression(y, pred, n_boot=300, level=0.68, seed=3)
    assert again == est
    assert M.evaluate_regression(y, pred, n_boot=300, level=0.95, seed=3)["sigma"].hi > est["sigma"].hi


def test_nonfinite_pairs_are_dropped_and_empty_input_refused():
    est = M.evaluate_regression([1.0, np.nan, 3.0], [1.0, 2.0, np.inf], n_boot=0)
    assert est["sigma"].value == 0.0 and np.isnan(est["sigma"].lo)
    with pytest.raises(ValueError, match="empty"):
        M.evaluate_regression([np.nan], [1.0])


def test_metric_names_follow_the_design():
    names = M.as_metrics(M.evaluate_regression([0.0, 1.0], [0.0, 2.0], n_boot=5), "val", "teff")
    assert {"val/sigma_teff", "val/sigma_teff_lo", "val/sigma_teff_hi", "val/robust_sigma_teff",
            "val/mae_teff", "val/bias_teff", "val/rmse_teff"} <= set(names)


@pytest.mark.parametrize("name", B.MODELS)
def test_each_model_fits_saves_natively_and_reloads(tmp_path, name):
    stars = make_stars(200, seed=5)
    X = F.features(stars, "color").to_numpy()
    y = stars["teff"].to_numpy()
    model = B.make_regressor(name, {"n_estimators": 20}, seed=1, n_jobs=2)
    model.fit(X, y)
    path = B.save_model(model, name, tmp_path / "teff")
    assert path.suffix == B.SUFFIX[name] and path.is_file()
    if name == "random_forest":  # a pickle: refused unless trusted
        with pytest.raises(PermissionError, match="trusted=True"):
            B.load_model(path)
    again = B.load_model(path, trusted=True)
    np.testing.assert_allclose(again.predict(X), model.predict(X), rtol=1e-6)
    # it learned something: far better than predicting the mean
    assert np.std(model.predict(X) - y) < 0.5 * np.std(y)


def test_same_seed_same_model():
    stars = make_stars(150, seed=2)
    X, y = F.features(stars, "mag").to_numpy(), stars["logg"].to_numpy()
    preds = [B.make_regressor("random_forest", {"n_estimators": 10}, seed=7, n_jobs=1).fit(X, y).predict(X)
             for _ in range(2)]
    np.testing.assert_array_equal(*preds)


def test_lightgbm_aliases_map_to_one_parameter():
    model = B.make_regressor("lightgbm", {"lambda_l1": 0.9, "min_data_in_leaf": 26})
    params = model.get_params()
    assert params["reg_alpha"] == 0.9 and params["min_child_samples"] == 26
    assert "lambda_l1" not in params and "min_data_in_leaf" not in params
    with pytest.raises(ValueError, match="same parameter"):
        B.make_regressor("lightgbm", {"min_child_samples": 6, "min_data_in_leaf": 26})


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown baseline model"):
        B.make_regressor("svm", {})
