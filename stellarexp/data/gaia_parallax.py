"""Gaia DR3 parallaxes in the star table: the zero-point correction and what models may read.

A cross-match table may carry Gaia DR3 columns (the archive's names, :data:`GAIA_COLUMNS`). The
catalogue parallaxes are biased by a zero point of a few hundredths of a mas that depends on
magnitude, colour and ecliptic latitude (Lindegren et al. 2021, A&A 649, A4); the maintained
``gaiadr3-zeropoint`` package implements that function. :func:`correct` subtracts it where its
inputs are known and inside its validity (6 < G < 21, 1.1 < nu_eff < 1.9 for 5-parameter
solutions, 1.24 < pseudocolour < 1.72 for 6-parameter ones) and leaves the catalogue value, with
``parallax_zp_applied`` false, elsewhere.

Models never see ``1 / parallax`` (biased and undefined for the noisy, zero and negative
parallaxes of faint stars): :func:`pseudo_luminosity` is linear in the parallax,
``parallax [mas] x 10^(0.2 m) / 100 = 10^(0.2 M)`` (the "fakemag" of astroNN, Leung & Bovy
2019), with its error from the parallax error alone. A star without a parallax gets 0 with
:data:`MISSING_ERROR` as its error: no information, the same for every model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from zero_point import zpt

GAIA_COLUMNS: tuple[str, ...] = ("parallax", "parallax_error", "phot_g_mean_mag",
                                 "nu_eff_used_in_astrometry", "pseudocolour", "ecl_lat",
                                 "astrometric_params_solved")
"""Gaia DR3 ``gaia_source`` columns the pipeline reads (all optional; parallax in mas)."""
SOLUTIONS = (31, 95)  # 5- and 6-parameter astrometric solutions: the correction's domain
MISSING_ERROR = 1.0e3  # pseudo-luminosity error of a star without a parallax

_tables_loaded = False


def _load_tables() -> None:
    global _tables_loaded
    if not _tables_loaded:
        zpt.load_tables()
        _tables_loaded = True


def zero_point(stars: pd.DataFrame) -> np.ndarray:
    """The Lindegren et al. (2021) parallax zero point (mas) per star; NaN where an input is
    missing, the solution is not 5- or 6-parameter, or the star is outside the validity range."""
    n = len(stars)
    if n == 0 or not all(c in stars for c in ("phot_g_mean_mag", "ecl_lat", "astrometric_params_solved")):
        return np.full(n, np.nan)

    def column(name):  # nu_eff (5-p) or pseudocolour (6-p) may be absent when no star needs it
        if name not in stars:
            return np.full(n, np.nan)
        return pd.to_numeric(stars[name], errors="coerce").to_numpy(float)

    g, nu, pc = column("phot_g_mean_mag"), column("nu_eff_used_in_astrometry"), column("pseudocolour")
    lat, sol = column("ecl_lat"), column("astrometric_params_solved")
    out = np.full(n, np.nan)
    colour = np.where(sol == 95, pc, nu)
    ok = np.isin(sol, SOLUTIONS) & np.isfinite(g) & np.isfinite(colour) & np.isfinite(lat)
    if ok.any():
        _load_tables()
        out[ok] = zpt.get_zpt(g[ok], nu[ok], pc[ok], lat[ok], sol[ok].astype(int), _warnings=False)
    return out


def correct(stars: pd.DataFrame) -> pd.DataFrame:
    """``stars`` with ``parallax_zero_point`` and ``parallax_corrected`` (mas) and
    ``parallax_zp_applied``; unchanged when it has no ``parallax`` column."""
    if "parallax" not in stars:
        return stars
    out = stars.copy()
    plx = pd.to_numeric(out["parallax"], errors="coerce").to_numpy(float)
    zp = zero_point(out)
    applied = np.isfinite(zp) & np.isfinite(plx)
    out["parallax"] = plx
    out["parallax_zero_point"] = zp
    out["parallax_corrected"] = np.where(applied, plx - np.nan_to_num(zp), plx)
    out["parallax_zp_applied"] = applied
    return out


def pseudo_luminosity(parallax_mas, parallax_error_mas, magnitude) -> tuple[np.ndarray, np.ndarray]:
    """``parallax x 10^(0.2 m) / 100`` and its error; 0 and :data:`MISSING_ERROR` where the
    parallax, its error or the magnitude is missing (module docstring)."""
    plx = np.asarray(parallax_mas, float)
    err = np.asarray(parallax_error_mas, float)
    scale = 10.0 ** (0.2 * np.asarray(magnitude, float)) / 100.0
    ok = np.isfinite(plx) & np.isfinite(err) & (err > 0) & np.isfinite(scale)
    value = np.where(ok, np.nan_to_num(plx) * np.nan_to_num(scale), 0.0)
    error = np.where(ok, np.nan_to_num(err) * np.nan_to_num(scale), MISSING_ERROR)
    return value, error
