"""Gaia DR3-like astrometry of the survey's stars: parallaxes, their errors and zero points.

Nearly every star of the paper's sample has a Gaia DR3 parallax. Each labelled star gets the
columns of a cross-match with ``gaia_source`` (issue 30):

- ``phot_g_mean_mag``: G from the star's true apparent g and i (dust included) through
  Jordi et al. (2010, A&A 523, A48, Table 3) ``G - g = -0.0940 - 0.5310 x - 0.0974 x^2 +
  0.0052 x^3`` with ``x = g - i``; ``G_BP - G_RP = 0.3800 + 0.8376 x - 0.0097 x^2 - 0.0001 x^3``
  (coefficients as transcribed in public code; the table itself was not readable here. Check:
  the Sun's g - i = 0.55 gives BP - RP = 0.84, against Gaia's 0.82);
- ``nu_eff_used_in_astrometry``: ``1.76 - (1.61 / pi) atan(0.531 (BP - RP))`` (Lindegren et al.
  2021, A&A 649, A2, Eq. 3), within 1.24-1.72 um^-1; ``astrometric_params_solved`` 31 (every
  synthetic source has a 5-parameter solution), ``pseudocolour`` empty; ``ecl_lat`` from the
  position;
- ``parallax_error``: the Gaia DR3 error law in G (Lindegren et al. 2021; Gaia DR3
  documentation): 0.02 mas up to G = 13, 0.03 at G = 15, 0.07 at 17, 0.5 at 20, 1.3 at 21,
  log-linear in between and beyond;
- ``parallax = 1000 / d + Z + e_Z + e``: the true parallax, the zero point ``Z`` of the published
  function (the ``gaiadr3-zeropoint`` package, Lindegren et al. 2021, A&A 649, A4) at the star's
  G, nu_eff and ecliptic latitude, its scatter ``e_Z ~ N(0, 0.01 mas)``, and the measurement error
  ``e ~ N(0, parallax_error)``. The zero point is left in, as in the catalogue: the pipeline
  corrects it (:mod:`stellarexp.data.gaia_parallax`).

The draws come from their own random stream, so adding them changes no other column.
"""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import BarycentricMeanEcliptic, SkyCoord
from zero_point import zpt

G_MINUS_G = (-0.0940, -0.5310, -0.0974, 0.0052)  # Jordi et al. 2010, G - g in powers of g - i
BP_MINUS_RP = (0.3800, 0.8376, -0.0097, -0.0001)  # Jordi et al. 2010, BP - RP in powers of g - i
NU_EFF_RANGE = (1.24, 1.72)  # um^-1
ERROR_LAW = ((13.0, 0.02), (15.0, 0.03), (17.0, 0.07), (20.0, 0.5), (21.0, 1.3))  # (G, mas)
ZERO_POINT_SCATTER = 0.01  # mas
ZERO_POINT_G_RANGE = (6.0, 21.0)  # the published function's validity in G
FIVE_PARAMETER = 31
GAIA_CATALOGUE_COLUMNS = ("parallax", "parallax_error", "phot_g_mean_mag", "nu_eff_used_in_astrometry",
                          "pseudocolour", "ecl_lat", "astrometric_params_solved")
"""The columns the cross-match table gets (Gaia DR3 ``gaia_source`` names)."""


def _poly(coeffs, x):
    return sum(c * x ** k for k, c in enumerate(coeffs))


def g_magnitude(mag_g, mag_i) -> np.ndarray:
    """Gaia G from SDSS g and i (Jordi et al. 2010)."""
    g, i = np.asarray(mag_g, float), np.asarray(mag_i, float)
    return g + _poly(G_MINUS_G, g - i)


def bp_rp(mag_g, mag_i) -> np.ndarray:
    """Gaia G_BP - G_RP from SDSS g - i (Jordi et al. 2010)."""
    return _poly(BP_MINUS_RP, np.asarray(mag_g, float) - np.asarray(mag_i, float))


def nu_eff(colour) -> np.ndarray:
    """The effective wavenumber of the astrometric solution (um^-1) from BP - RP."""
    nu = 1.76 - (1.61 / math.pi) * np.arctan(0.531 * np.asarray(colour, float))
    return np.clip(nu, *NU_EFF_RANGE)


def parallax_error(g) -> np.ndarray:
    """Gaia DR3's parallax error (mas) at G: :data:`ERROR_LAW`, log-linear in G, flat below its
    first point and extended with its last slope beyond its last."""
    g = np.asarray(g, float)
    pts = np.array(ERROR_LAW)
    log_err = np.interp(g, pts[:, 0], np.log10(pts[:, 1]))
    slope = (math.log10(pts[-1, 1]) - math.log10(pts[-2, 1])) / (pts[-1, 0] - pts[-2, 0])
    log_err = np.where(g > pts[-1, 0], math.log10(pts[-1, 1]) + slope * (g - pts[-1, 0]), log_err)
    return 10.0 ** log_err


def ecliptic_latitude(ra, dec) -> np.ndarray:
    """Ecliptic latitude (degrees) of ICRS positions."""
    c = SkyCoord(np.asarray(ra, float) * u.deg, np.asarray(dec, float) * u.deg, frame="icrs")
    return c.transform_to(BarycentricMeanEcliptic()).lat.deg


def gaia_columns(stars: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The Gaia DR3 columns of ``stars`` (module docstring) and ``parallax_true`` and
    ``parallax_zero_point_true`` for the truth table.

    Parameters
    ----------
    stars : pandas.DataFrame
        ``distance_pc``, ``ra``, ``dec``, ``mag_g``, ``mag_i`` (true apparent, dust included).
    rng : numpy.random.Generator
        The astrometry's own stream.
    """
    n = len(stars)
    g = g_magnitude(stars["mag_g"], stars["mag_i"])
    nu = nu_eff(bp_rp(stars["mag_g"], stars["mag_i"]))
    lat = ecliptic_latitude(stars["ra"], stars["dec"])
    zpt.load_tables()
    # the function is published for 6 < G < 21: beyond, its end value (as the package's own
    # warning path returns)
    zp = np.asarray(zpt.get_zpt(np.clip(g, *ZERO_POINT_G_RANGE), nu, np.full(n, np.nan), lat,
                                np.full(n, FIVE_PARAMETER), _warnings=False), float)
    err = parallax_error(g)
    true = 1000.0 / stars["distance_pc"].to_numpy(float)
    obs = true + zp + rng.normal(0.0, ZERO_POINT_SCATTER, n) + rng.normal(0.0, 1.0, n) * err
    return pd.DataFrame({
        "parallax": obs, "parallax_error": err, "phot_g_mean_mag": g,
        "nu_eff_used_in_astrometry": nu, "pseudocolour": np.full(n, np.nan), "ecl_lat": lat,
        "astrometric_params_solved": np.full(n, FIVE_PARAMETER, dtype=np.int64),
        "parallax_true": true, "parallax_zero_point_true": zp}, index=stars.index)
