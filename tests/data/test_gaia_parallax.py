"""Gaia parallaxes in the star table: the published zero point subtracted where it applies, and
the pseudo-luminosity models read (never 1 / parallax)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stellarexp.data import gaia_parallax as gp


def _table(**over):
    base = {"parallax": [1.0, 0.5, -0.2, np.nan, 0.3, 0.4],
            "parallax_error": [0.03, 0.05, 0.4, np.nan, 0.05, 0.05],
            "phot_g_mean_mag": [15.0, 17.0, 20.0, 18.0, 17.0, 22.5],
            "nu_eff_used_in_astrometry": [1.5, 1.45, 1.6, 1.5, np.nan, 1.5],
            "pseudocolour": [np.nan, np.nan, np.nan, np.nan, 1.5, np.nan],
            "ecl_lat": [10.0, -30.0, 60.0, 0.0, 45.0, 0.0],
            "astrometric_params_solved": [31, 31, 31, 31, 95, 31]}
    base.update(over)
    return pd.DataFrame(base)


def test_the_published_zero_point_is_subtracted_where_it_applies():
    from zero_point import zpt

    zpt.load_tables()
    t = gp.correct(_table())
    expected = zpt.get_zpt(np.array([15.0]), np.array([1.5]), np.array([np.nan]),
                           np.array([10.0]), np.array([31]))[0]
    assert t["parallax_zero_point"].iloc[0] == pytest.approx(expected)
    assert t["parallax_corrected"].iloc[0] == pytest.approx(1.0 - expected)
    assert t["parallax_zp_applied"].tolist() == [True, True, True, False, True, False]
    # the 6-parameter solution uses the pseudocolour; G beyond 21 is outside the function
    assert np.isfinite(t["parallax_zero_point"].iloc[4]) and np.isnan(t["parallax_zero_point"].iloc[5])
    assert t["parallax_corrected"].iloc[5] == 0.4  # left as catalogued
    assert gp.correct(pd.DataFrame({"x": [1]})).columns.tolist() == ["x"]  # no Gaia: untouched


def test_pseudo_luminosity_is_linear_and_defined_for_any_parallax():
    value, error = gp.pseudo_luminosity([2.0, -0.3, np.nan, 1.0], [0.1, 0.4, 0.1, np.nan],
                                        [10.0, 10.0, 10.0, 10.0])
    assert value[0] == pytest.approx(2.0) and error[0] == pytest.approx(0.1)  # 10^(0.2 x 10) / 100 = 1
    assert value[1] == pytest.approx(-0.3)  # negative parallaxes stay (no 1 / parallax)
    assert value[2] == 0 and error[2] == gp.MISSING_ERROR and error[3] == gp.MISSING_ERROR
    # 10^(0.2 M): a star 5 mag fainter at the same parallax is 10x more luminous
    v5, _ = gp.pseudo_luminosity([1.0], [0.1], [15.0])
    assert v5[0] == pytest.approx(10.0)


def test_colour_and_parallax_features():
    from stellarexp.data.features import PARALLAX_FEATURES, feature_names, features

    stars = _table()
    for b, m in zip("ugriz", (18.0, 16.5, 16.0, 15.8, 15.7)):
        stars[f"psfmag_{b}"] = m
        stars[f"extinction_{b}"] = 0.0
    X = features(gp.correct(stars), "color_parallax")
    assert tuple(X.columns) == feature_names("color_parallax") and X.shape == (6, 12)
    assert set(PARALLAX_FEATURES) <= set(X.columns) and X.notna().all().all()
    assert X["plx_lum_r_err"].iloc[3] == gp.MISSING_ERROR
    with pytest.raises(KeyError, match="need a parallax column"):
        features(stars.drop(columns=["parallax"]), "color_parallax")
