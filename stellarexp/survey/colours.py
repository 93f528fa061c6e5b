"""Dust-free SDSS colours of stars from their labels: empirical relations, extended.

g-r from Teff (Ivezic et al. 2008), r-i on the Juric et al. (2008) stellar locus (with a cool
branch), i-z linear in r-i, u-g from [Fe/H] and g-r (the Ivezic et al. 2008 photometric
metallicity polynomial, inverted and extended) plus a gravity term. Every relation, its
validity range and how it is extended: ``docs/population.md``.
"""

from __future__ import annotations

import numpy as np

# --- Empirical colour relations (see docs/population.md) ------------------------------------
# Range of g-r over which the Ivezic et al. (2008) Teff cubic is inverted; hotter stars are
# clamped to the blue end (none in APOGEE, whose Teff <= 6.8 kK maps to g-r >= 0.17).
_GR_TEFF_GRID = np.linspace(-0.4, 1.0, 1401)
GR_TEFF_VALID = (-0.3, 1.3)  # g-r range of the Ivezic et al. (2008) Teff cubic
# Cool branch: below the Teff of g-r = 1.0 the Teff cubic flattens towards its validity
# edge, so r-i is taken as a quadratic in log Teff, C1-continuous at the join and passing
# through r-i = 1.40 at 3250 K (an approximate mid-M-dwarf locus value).
GR_COOL_JOIN = 1.0
RI_COOL_ANCHOR = (3250.0, 1.40)
# Metallicity polynomial: evaluated for g-r clamped into this window (its stated validity is
# 0.2-0.6, but bluer than 0.3 its metal-rich branch turns sharply redder, an edge artefact).
UG_FEH_GR_WINDOW = (0.3, 0.6)
UG_FEH_MAX_SLOPE = 0.6  # mag/dex: beyond this local sensitivity the root is continued linearly
UG_FEH_MIN = -3.0  # [Fe/H] floor fed to the polynomial
UG_BLUE_SLOPE = -0.5  # d(u-g)/d(g-r) bluer than the window (Balmer jump makes u-g redder)
UG_RED_RISE = 0.80  # total further rise of u-g from g-r = 0.6 to the M-dwarf plateau (~2.7)
UG_RED_SCALE = 0.33  # e-folding scale (mag of g-r) of that rise
UG_FEH_TAPER_FLOOR = 0.5  # metallicity sensitivity kept far redder than g-r = 0.6
UG_FEH_TAPER_SCALE = 0.3
# Gravity: at fixed g-r, giants are redder in u-g (Lenz et al. 1998; SEGUE K giants).
GRAVITY_UG_OFFSET = 0.15
GRAVITY_LOGG_MID = 3.5
GRAVITY_LOGG_WIDTH = 0.25
# i-z along the locus: straight line through typical G dwarf (r-i 0.11, i-z 0.03) and mid-M
# dwarf (r-i 1.4, i-z 0.8) colours.
IZ_SLOPE, IZ_INTERCEPT = 0.60, -0.035


def gr_to_teff(g_r):
    """Teff (K) of a main-sequence star of colour g-r (Ivezic et al. 2008 cubic).

    Parameters
    ----------
    g_r : array_like
        g-r colour (mag); the relation holds for -0.3 < g-r < 1.3.

    Returns
    -------
    numpy.ndarray
    """
    y = np.asarray(g_r, dtype=float)
    return 10.0 ** (3.882 - 0.316 * y + 0.0488 * y**2 + 0.0283 * y**3)


_LOGT_GRID_DESC = np.log10(gr_to_teff(_GR_TEFF_GRID))  # decreasing with g-r


def teff_to_gr(teff):
    """Invert :func:`gr_to_teff` on -0.4 <= g-r <= 1.0 (clamped outside).

    Parameters
    ----------
    teff : array_like
        Effective temperature (K).

    Returns
    -------
    numpy.ndarray
        g-r (mag).
    """
    logt = np.log10(np.asarray(teff, dtype=float))
    return np.interp(logt, _LOGT_GRID_DESC[::-1], _GR_TEFF_GRID[::-1])


def _locus_poly(r_i):
    x = np.asarray(r_i, dtype=float)
    return 4.9 * x**3 + 2.45 * x**2 + 1.68 * x + 0.050


def gr_from_ri(r_i):
    """g-r on the Juric et al. (2008) stellar locus for a given r-i.

    Parameters
    ----------
    r_i : array_like
        r-i colour (mag).

    Returns
    -------
    numpy.ndarray
        g-r (mag); saturates at 1.39 for M dwarfs.
    """
    return 1.39 * (1.0 - np.exp(-_locus_poly(r_i)))


_RI_GRID = np.linspace(-0.6, 3.0, 7201)
_LOCUS_P_GRID = _locus_poly(_RI_GRID)  # strictly increasing (the cubic has no real turning point)


def ri_from_gr(g_r):
    """Invert the Juric et al. (2008) locus: r-i for a given g-r.

    Parameters
    ----------
    g_r : array_like
        g-r (mag); values above 1.385 are clamped (the locus saturates at 1.39).

    Returns
    -------
    numpy.ndarray
        r-i (mag), within -0.6..3.0.
    """
    y = np.minimum(np.asarray(g_r, dtype=float), 1.385)
    return np.interp(-np.log1p(-y / 1.39), _LOCUS_P_GRID, _RI_GRID)


def iz_from_ri(r_i):
    """i-z along the stellar locus: a straight line in r-i (see ``docs/population.md``).

    Parameters
    ----------
    r_i : array_like

    Returns
    -------
    numpy.ndarray
    """
    return IZ_SLOPE * np.asarray(r_i, dtype=float) + IZ_INTERCEPT


def feh_from_colours(u_g, g_r):
    """Photometric [Fe/H] of an F/G dwarf (Ivezic et al. 2008 polynomial).

    Parameters
    ----------
    u_g, g_r : array_like
        Colours (mag); valid for 0.2 < g-r < 0.6.

    Returns
    -------
    numpy.ndarray
    """
    x = np.asarray(u_g, dtype=float)
    y = np.asarray(g_r, dtype=float)
    return (
        -13.13 + 14.09 * x + 28.04 * y - 5.51 * x * y - 5.90 * x**2 - 58.68 * y**2
        + 9.14 * x**2 * y - 20.61 * x * y**2 + 58.20 * y**3
    )


def _ug_polynomial_root(g_r, fe_h):
    """u-g solving the metallicity polynomial (quadratic in u-g), physical (lower) root.

    Where the root's sensitivity d(u-g)/d[Fe/H] would exceed ``UG_FEH_MAX_SLOPE`` (it grows
    without bound towards the polynomial's maximum [Fe/H]) the root is continued linearly
    with that slope, so metal-rich stars stay well defined and C1-smooth.
    """
    y = np.asarray(g_r, dtype=float)
    feh = np.maximum(np.asarray(fe_h, dtype=float), UG_FEH_MIN)
    a = -5.90 + 9.14 * y  # negative for g-r < 0.645
    b = 14.09 - 5.51 * y - 20.61 * y**2
    c = -13.13 + 28.04 * y - 58.68 * y**2 + 58.20 * y**3
    # The lower root has slope 1/sqrt(disc); disc = 1/s^2 defines where linear continuation starts.
    disc_min = 1.0 / UG_FEH_MAX_SLOPE**2
    feh_lin = c - (b**2 - disc_min) / (4.0 * a)
    fe_in = np.minimum(feh, feh_lin)
    root = (-b + np.sqrt(b**2 - 4.0 * a * (c - fe_in))) / (2.0 * a)
    return root + UG_FEH_MAX_SLOPE * np.maximum(feh - feh_lin, 0.0)


def ug_from_feh(g_r, fe_h):
    """Dwarf u-g for a given g-r and [Fe/H], the Ivezic et al. (2008) relation extended.

    Inside 0.3 <= g-r <= 0.6 this inverts :func:`feh_from_colours` exactly (up to the
    metal-rich linear continuation). Bluer, u-g grows with a gentle Balmer-jump slope; redder,
    u-g rises towards the M-dwarf plateau (about 2.7) and the metallicity sensitivity tapers
    to half its g-r = 0.6 value. See ``docs/population.md``.

    Parameters
    ----------
    g_r, fe_h : array_like
        Colour (mag) and metallicity (dex), broadcast together.

    Returns
    -------
    numpy.ndarray
        u-g (mag) of a dwarf; add :func:`gravity_ug_offset` for giants.
    """
    y, feh = np.broadcast_arrays(np.asarray(g_r, dtype=float), np.asarray(fe_h, dtype=float))
    lo, hi = UG_FEH_GR_WINDOW
    base = _ug_polynomial_root(np.clip(y, lo, hi), feh)
    ref_hi = float(_ug_polynomial_root(hi, 0.0))
    red = np.maximum(y - hi, 0.0)
    rise = UG_RED_RISE * -np.expm1(-red / UG_RED_SCALE)
    taper = UG_FEH_TAPER_FLOOR + (1.0 - UG_FEH_TAPER_FLOOR) * np.exp(-red / UG_FEH_TAPER_SCALE)
    ug = np.where(y > hi, ref_hi + rise + (base - ref_hi) * taper, base)
    return np.where(y < lo, base + UG_BLUE_SLOPE * (y - lo), ug)


def gravity_ug_offset(logg):
    """Extra u-g of low-gravity stars at fixed g-r: a smooth step in logg.

    About ``GRAVITY_UG_OFFSET`` (0.15 mag) for giants (logg <~ 3), about zero for dwarfs
    (logg >~ 4), logistic in between.

    Parameters
    ----------
    logg : array_like

    Returns
    -------
    numpy.ndarray
    """
    logg = np.asarray(logg, dtype=float)
    return GRAVITY_UG_OFFSET / (1.0 + np.exp((logg - GRAVITY_LOGG_MID) / GRAVITY_LOGG_WIDTH))


def _cool_ri_coefficients() -> tuple[float, float, float, float]:
    """Join Teff, r-i there, and linear/quadratic coefficients of the cool r-i branch."""
    y = GR_COOL_JOIN
    t_join = float(gr_to_teff(y))
    ri_join = float(ri_from_gr(y))
    dy_dlogt = 1.0 / (-0.316 + 2 * 0.0488 * y + 3 * 0.0283 * y**2)
    p = float(_locus_poly(ri_join))
    dgr_dri = 1.39 * np.exp(-p) * (3 * 4.9 * ri_join**2 + 2 * 2.45 * ri_join + 1.68)
    k1 = -dy_dlogt / dgr_dri  # d(r-i)/d(theta), theta = log10(t_join / T)
    t_a, ri_a = RI_COOL_ANCHOR
    theta_a = np.log10(t_join / t_a)
    k2 = (ri_a - ri_join - k1 * theta_a) / theta_a**2
    return t_join, ri_join, float(k1), float(k2)


_T_JOIN, _RI_JOIN, _K1_COOL, _K2_COOL = _cool_ri_coefficients()


def intrinsic_colours(teff, logg, fe_h) -> dict[str, np.ndarray]:
    """Dust-free SDSS colours of stars from their labels.

    g-r from Teff (Ivezic et al. 2008; below ~4400 K via a cool r-i branch and the locus),
    r-i from the Juric et al. (2008) locus, i-z linear in r-i, u-g from [Fe/H] and g-r
    (Ivezic et al. 2008, extended) plus a gravity term.

    Parameters
    ----------
    teff, logg, fe_h : array_like
        Labels, broadcast together.

    Returns
    -------
    dict
        Keys ``u_g``, ``g_r``, ``r_i``, ``i_z`` -> numpy arrays (mag).
    """
    teff, logg, fe_h = np.broadcast_arrays(
        np.asarray(teff, dtype=float), np.asarray(logg, dtype=float), np.asarray(fe_h, dtype=float)
    )
    gr_warm = teff_to_gr(teff)
    theta = np.maximum(np.log10(_T_JOIN / teff), 0.0)
    ri_cool = _RI_JOIN + _K1_COOL * theta + _K2_COOL * theta**2
    cool = teff < _T_JOIN
    r_i = np.where(cool, ri_cool, ri_from_gr(gr_warm))
    g_r = np.where(cool, gr_from_ri(ri_cool), gr_warm)
    u_g = ug_from_feh(g_r, fe_h) + gravity_ug_offset(logg)
    return {"u_g": u_g, "g_r": g_r, "r_i": r_i, "i_z": iz_from_ri(r_i)}
