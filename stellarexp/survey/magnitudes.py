"""Absolute and apparent magnitudes from labels: mass, luminosity, bolometric corrections.

Labels reach magnitudes only through physics: labels -> (mass, L, BC) -> absolute magnitude
(:mod:`stellarexp.survey.colours` for the colours), plus distance and extinction. See
``docs/population.md``.
"""

from __future__ import annotations

import functools

import astropy.units as u
import numpy as np
import speclite.filters

from stellarexp.sdss import BANDS, EXTINCTION_COEFF
from stellarexp.survey import dwarf_sequence
from stellarexp.survey.colours import intrinsic_colours

# --- Solar and photometric reference values -------------------------------------------------
TEFF_SUN = 5772.0  # K, IAU 2015 nominal
LOGG_SUN = 4.438  # cgs
MBOL_SUN = 4.74  # IAU 2015 zero point for L_sun = 3.828e26 W
# The Sun's absolute magnitudes (Willmer 2018): SDSS AB, 2MASS H in Vega. They pin the
# blackbody bolometric corrections at 5772 K.
ABSMAG_SUN: dict[str, float] = {"u": 6.39, "g": 5.11, "r": 4.65, "i": 4.53, "z": 4.50, "H": 3.32}
# Band whose blackbody BC sets the luminosity scale; the others follow from empirical colours.
# z: molecular blanketing of cool stars is weakest there (see docs/population.md).
BC_ANCHOR_BAND = "z"
EXTINCTION_COEFF_H = 0.46  # A_H / E(B-V), R_V = 3.1 (approx.)

_BC_LOGT_GRID = np.linspace(np.log10(2000.0), np.log10(20000.0), 361)


@functools.lru_cache(maxsize=1)
def _blackbody_bc_table() -> np.ndarray:
    """Raw blackbody BC_x = Mbol - M_x (AB) on ``_BC_LOGT_GRID``: columns u g r i z H."""
    names = [f"sdss2010-{b}" for b in BANDS] + ["twomass-H"]
    filters = speclite.filters.load_filters(*names)
    wave_aa = np.arange(2800.0, 19005.0, 5.0)
    teff = 10.0**_BC_LOGT_GRID
    h, c, k = 6.62607015e-27, 2.99792458e10, 1.380649e-16  # cgs
    lam_cm = wave_aa[None, :] * 1e-8
    x = h * c / (lam_cm * k * teff[:, None])
    b_lam = 2 * h * c**2 / lam_cm**5 / np.expm1(x)  # erg s^-1 cm^-2 cm^-1 sr^-1
    # Star of one solar radius at 10 pc: flux density pi B (R/d)^2, per Angstrom.
    r_over_d = 6.957e10 / 3.0856775814913673e19
    f_lam = np.pi * b_lam * r_over_d**2 * 1e-8
    mags = filters.get_ab_magnitudes(f_lam * u.erg / u.s / u.cm**2 / u.AA, wave_aa * u.AA)
    absmag = np.column_stack([np.asarray(mags[name], dtype=float) for name in names])
    mbol = MBOL_SUN - 2.5 * np.log10((teff / TEFF_SUN) ** 4)  # L = (T/Tsun)^4 for R = Rsun
    return mbol[:, None] - absmag


_BC_BANDS: tuple[str, ...] = (*BANDS, "H")


def blackbody_bc(teff, band: str = BC_ANCHOR_BAND, *, normalised: bool = True):
    """Bolometric correction BC_x = Mbol - M_x of a blackbody through real filter curves.

    The blackbody is integrated through speclite's ``sdss2010`` (ugriz, AB) or ``twomass-H``
    response curves.

    Parameters
    ----------
    teff : array_like
        Effective temperature (K); clamped to 2000-20000 K.
    band : str
        One of ``u g r i z`` or ``H`` (2MASS H).
    normalised : bool
        If False, the raw blackbody value in AB. If True, shifted by a per-band constant so
        that 5772 K gives the Sun's measured absolute magnitude ``ABSMAG_SUN`` (AB for ugriz,
        Vega for H); only the temperature dependence comes from the blackbody.

    Returns
    -------
    numpy.ndarray
    """
    if band not in _BC_BANDS:
        raise ValueError(f"band must be one of {_BC_BANDS}, got {band!r}")
    column = _blackbody_bc_table()[:, _BC_BANDS.index(band)]
    bc = np.interp(np.log10(np.asarray(teff, dtype=float)), _BC_LOGT_GRID, column)
    if normalised:
        sun_raw = np.interp(np.log10(TEFF_SUN), _BC_LOGT_GRID, column)
        bc = bc + (MBOL_SUN - ABSMAG_SUN[band] - sun_raw)
    return bc


def stellar_mass(teff, logg, fe_h, rng=None):
    """Approximate stellar mass (Msun) from labels.

    Dwarfs: the Pecaut & Mamajek (2013) main sequence up to G0V (5930 K,
    :mod:`~stellarexp.survey.dwarf_sequence`); hotter, M = 1.06 (Teff / 5930 K)^1.7 (from
    L ~ M^4, R ~ M^0.8), clipped to 0.1-2.5. Giants: 0.9 Msun at [Fe/H] <= -1 rising to 1.2 Msun at [Fe/H] >= 0. The two
    are blended in log M with a logistic weight in logg (midpoint 3.9, width 0.15). With
    ``rng``, a log-normal scatter of 0.03 dex (dwarfs) to 0.10 dex (giants) is added.

    Parameters
    ----------
    teff, logg, fe_h : array_like
    rng : numpy.random.Generator, optional

    Returns
    -------
    numpy.ndarray
    """
    teff, logg, fe_h = np.broadcast_arrays(
        np.asarray(teff, dtype=float), np.asarray(logg, dtype=float), np.asarray(fe_h, dtype=float)
    )
    t_top = dwarf_sequence.TEFF_RANGE[1]
    hot = np.clip(dwarf_sequence.MASS_RANGE[1] * (np.maximum(teff, t_top) / t_top) ** 1.7, 0.1, 2.5)
    log_dwarf = np.log10(np.where(teff < t_top, dwarf_sequence.mass_from_teff(teff), hot))
    log_giant = np.log10(0.9) + np.log10(1.2 / 0.9) * np.clip(fe_h + 1.0, 0.0, 1.0)
    w = 1.0 / (1.0 + np.exp(-(logg - 3.9) / 0.15))
    logm = w * log_dwarf + (1.0 - w) * log_giant
    if rng is not None:
        logm = logm + rng.normal(0.0, 1.0, logm.shape) * (w * 0.03 + (1.0 - w) * 0.10)
    return 10.0**logm


def luminosity(mass, teff, logg):
    """L/Lsun = (M/Msun) (Teff/5772 K)^4 10^(4.438 - logg).

    Parameters
    ----------
    mass, teff, logg : array_like

    Returns
    -------
    numpy.ndarray
    """
    return (
        np.asarray(mass, dtype=float)
        * (np.asarray(teff, dtype=float) / TEFF_SUN) ** 4
        * 10.0 ** (LOGG_SUN - np.asarray(logg, dtype=float))
    )


def absolute_magnitudes(teff, logg, fe_h, mass, colour_offsets=None) -> dict[str, np.ndarray]:
    """Absolute magnitudes in ugriz (AB) and 2MASS H (Vega) from labels and mass.

    Mbol = 4.74 - 2.5 log L; M_z = Mbol - BC_z with BC_z from the Sun-pinned blackbody
    (:func:`blackbody_bc`); u, g, r, i follow from M_z and :func:`intrinsic_colours`.
    H = Mbol - BC_H (blackbody, Sun-pinned) is approximate and serves only to model
    APOGEE's depth.

    Parameters
    ----------
    teff, logg, fe_h, mass : array_like
    colour_offsets : dict, optional
        Extra offsets added to ``u_g``, ``g_r``, ``r_i``, ``i_z`` (e.g. intrinsic scatter).

    Returns
    -------
    dict
        ``u g r i z H`` -> numpy arrays, plus ``mbol`` and ``luminosity`` (Lsun).
    """
    lum = luminosity(mass, teff, logg)
    mbol = MBOL_SUN - 2.5 * np.log10(lum)
    col = intrinsic_colours(teff, logg, fe_h)
    if colour_offsets:
        col = {k: v + colour_offsets.get(k, 0.0) for k, v in col.items()}
    out = {BC_ANCHOR_BAND: mbol - blackbody_bc(teff, BC_ANCHOR_BAND)}
    # Walk the colour chain outwards from the anchor band.
    chain = [("u", "g", "u_g"), ("g", "r", "g_r"), ("r", "i", "r_i"), ("i", "z", "i_z")]
    while len(out) < len(BANDS):
        for blue, red, c in chain:
            if red in out and blue not in out:
                out[blue] = out[red] + col[c]
            elif blue in out and red not in out:
                out[red] = out[blue] - col[c]
    out["H"] = mbol - blackbody_bc(teff, "H")
    out["mbol"] = mbol
    out["luminosity"] = lum
    return out


def ivezic_dwarf_absmag_r(g_i, fe_h):
    """Photometric-parallax M_r of a main-sequence star (Ivezic et al. 2008).

    Used only as an independent check of :func:`absolute_magnitudes` for dwarfs.

    Parameters
    ----------
    g_i, fe_h : array_like

    Returns
    -------
    numpy.ndarray
    """
    x = np.asarray(g_i, dtype=float)
    feh = np.asarray(fe_h, dtype=float)
    m0 = -5.06 + 14.32 * x - 12.97 * x**2 + 6.127 * x**3 - 1.267 * x**4 + 0.0967 * x**5
    return m0 + 4.50 - 1.11 * feh - 0.18 * feh**2


def main_sequence_logg(teff):
    """Surface gravity of a main-sequence star of a given Teff (a rough linear rule).

    About 4.9 for mid-M dwarfs, 4.44 for the Sun, 4.3 for late F dwarfs (clipped to 4-5).

    Parameters
    ----------
    teff : array_like

    Returns
    -------
    numpy.ndarray
    """
    return np.clip(LOGG_SUN + 0.45 * (TEFF_SUN - np.asarray(teff, dtype=float)) / 2500.0, 4.0, 5.0)


def photometry_columns(absmag: dict, distance_pc, ebv) -> dict[str, np.ndarray]:
    """``extinction_*``, ``absmag_*`` and ``mag_*`` (apparent, with dust) columns.

    Parameters
    ----------
    absmag : dict
        Band -> absolute magnitude (AB).
    distance_pc, ebv : array_like
        Distance (pc) and E(B-V) (mag).

    Returns
    -------
    dict
    """
    mu = 5.0 * np.log10(distance_pc) - 5.0
    out = {}
    for b in BANDS:
        out[f"extinction_{b}"] = EXTINCTION_COEFF[b] * ebv
    for b in BANDS:
        out[f"absmag_{b}"] = absmag[b]
    for b in BANDS:
        out[f"mag_{b}"] = absmag[b] + mu + out[f"extinction_{b}"]
    return out
