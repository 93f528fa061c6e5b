"""Gaia DR3-like astrometry of the synthetic survey: the error law, the zero point left in, G and
nu_eff from the SDSS photometry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stellarexp.survey import gaia


def test_the_error_law_goes_through_the_published_points():
    g = np.array([12.0, 13.0, 15.0, 17.0, 20.0, 21.0])
    assert np.allclose(gaia.parallax_error(g), [0.02, 0.02, 0.03, 0.07, 0.5, 1.3])
    mid = gaia.parallax_error([16.0, 18.5, 21.5])
    assert 0.03 < mid[0] < 0.07 and 0.07 < mid[1] < 0.5 and mid[2] > 1.3
    assert np.all(np.diff(gaia.parallax_error(np.linspace(13, 22, 50))) >= 0)


def test_colours_of_the_sun_and_an_m_dwarf():
    # the Sun: g - i about 0.55; Gaia's solar BP - RP is 0.82
    assert gaia.bp_rp(5.0, 4.45) == pytest.approx(0.82, abs=0.03)
    assert gaia.g_magnitude(15.0, 14.45) == pytest.approx(15.0 - 0.415, abs=0.01)
    nu = gaia.nu_eff([-1.0, 0.82, 2.4, 6.0])
    assert nu[0] == 1.72 and nu[-1] == 1.24 and 1.24 < nu[2] < nu[1] < 1.72


def _stars(n, seed=0):
    rng = np.random.default_rng(seed)
    mag_i = rng.uniform(12.5, 19.5, n)
    return pd.DataFrame({"distance_pc": rng.uniform(100, 8000, n), "ra": rng.uniform(0, 360, n),
                         "dec": rng.uniform(-10, 60, n), "mag_i": mag_i,
                         "mag_g": mag_i + rng.uniform(0.3, 2.5, n)})


def test_parallaxes_scatter_about_truth_plus_the_zero_point():
    stars = _stars(20000)
    cols = gaia.gaia_columns(stars, np.random.default_rng(1))
    assert set(gaia.GAIA_CATALOGUE_COLUMNS) <= set(cols)
    assert np.allclose(cols["parallax_true"], 1000.0 / stars["distance_pc"])
    zp = cols["parallax_zero_point_true"]
    assert zp.between(-0.1, 0.05).all() and -0.05 < zp.median() < -0.01  # a few hundredths
    resid = cols["parallax"] - cols["parallax_true"] - zp
    pull = resid / np.hypot(cols["parallax_error"], gaia.ZERO_POINT_SCATTER)
    assert abs(pull.mean()) < 0.03 and pull.std() == pytest.approx(1.0, abs=0.03)
    # uncorrected, the catalogue parallax is biased by the zero point
    bright = cols["phot_g_mean_mag"] < 15
    assert (cols["parallax"] - cols["parallax_true"])[bright].mean() == pytest.approx(
        zp[bright].mean(), abs=0.003)
    assert (cols["astrometric_params_solved"] == 31).all() and cols["pseudocolour"].isna().all()


def test_same_stream_same_numbers():
    stars = _stars(50)
    a = gaia.gaia_columns(stars, np.random.default_rng([7, 5]))
    b = gaia.gaia_columns(stars, np.random.default_rng([7, 5]))
    pd.testing.assert_frame_equal(a, b)
