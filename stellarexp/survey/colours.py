"""Dust-free SDSS colours of stars from their labels: empirical relations, extended.

g-r from Teff (Ivezic et al. 2008), r-i on the Juric et al. (2008) stellar locus (with a cool
branch through the M4V point of Pecaut & Mamajek 2013 and West et al. 2011) moved for dwarfs as
real SSPP dwarfs of their g-r and [Fe/H] lie (:mod:`stellarexp.survey.ri_relation`), i-z from r-i
(a fit to real calibObj stars, :mod:`stellarexp.survey.iz_relation`),
u-g from [Fe/H] and g-r (a fit to real SSPP stars, :mod:`stellarexp.survey.ug_relation`) plus a
gravity term. Every relation, its validity range and how it is extended: ``docs/population.md``
and ``docs/simulation.md``.
"""

from __future__ import annotations

import numpy as np

from stellarexp.survey.iz_relation import packaged_iz_relation
from stellarexp.survey.ri_relation import GR_DOMAIN as RI_GR_DOMAIN
from stellarexp.survey.ri_relation import packaged_ri_offset
from stellarexp.survey.ug_relation import GR_DOMAIN as UG_GR_DOMAIN
from stellarexp.survey.ug_relation import packaged_ug_relation

# --- Empirical colour relations (see docs/population.md) ------------------------------------
# Range of g-r over which the Ivezic et al. (2008) Teff cubic is inverted; hotter stars are
# clamped to the blue end (none in APOGEE, whose Teff <= 6.8 kK maps to g-r >= 0.17).
_GR_TEFF_GRID = np.linspace(-0.4, 1.0, 1401)
GR_TEFF_VALID = (-0.3, 1.3)  # g-r range of the Ivezic et al. (2008) Teff cubic
# Cool branch: below the Teff of g-r = 1.0 the Teff cubic flattens towards its validity
# edge, so r-i is taken as a quadratic in log Teff, C1-continuous at the join and passing
# through the M4V point: Teff 3210 K (Pecaut & Mamajek 2013, online table v2021.03.02) and
# r-i 1.33 (West et al. 2011, Table 2).
GR_COOL_JOIN = 1.0
RI_COOL_ANCHOR = (3210.0, 1.33)
UG_BLUE_SLOPE = -0.5  # d(u-g)/d(g-r) bluer than the SSPP fit (Balmer jump makes u-g redder)
# Gravity: at fixed g-r, giants are redder in u-g (Lenz et al. 1998; SEGUE K giants).
# Yuan et al. (2015, "Stellar loci I", MNRAS 448, 855): at fixed g-i, 1 dex lower [Fe/H] makes
# dwarfs' g-r 0.02 mag bluer; linear from -1 to +0.5 dex, held beyond (the variations are smaller
# for metal-poor stars), for logg > 3.5 (their dwarfs). Their r-i at that g-r then follows the
# packaged SSPP dwarfs (ri_relation), and i-z follows r-i: at fixed r-i the SSPP dwarfs' i-z
# moves by less than 0.005 mag per dex.
LOCUS_FEH_SLOPE = 0.02
LOCUS_FEH_RANGE = (-1.0, 0.5)
LOCUS_FEH_LOGG = 3.5
GRAVITY_UG_OFFSET = 0.15
GRAVITY_LOGG_MID = 3.5
GRAVITY_LOGG_WIDTH = 0.25


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
    """i-z along the stellar locus: the cubic fitted to real calibObj stars
    (:mod:`stellarexp.survey.iz_relation`), linear beyond its -0.1..1.7 range.

    Parameters
    ----------
    r_i : array_like

    Returns
    -------
    numpy.ndarray
    """
    return packaged_iz_relation()(r_i)


def ug_from_feh(g_r, fe_h):
    """Dwarf u-g for a given g-r and [Fe/H]: the relation fitted to real SSPP stars.

    Inside 0.15 <= g-r <= 1.2 and -2.5 <= [Fe/H] <= 0.5 the cubic fitted to the packaged SSPP
    half (:mod:`stellarexp.survey.ug_relation`); [Fe/H] outside is clamped. Bluer, u-g grows
    with a gentle Balmer-jump slope (``UG_BLUE_SLOPE``); redder (K7-M dwarfs) it continues with
    the slope of the SSPP table's red tail. See ``docs/simulation.md``.

    Parameters
    ----------
    g_r, fe_h : array_like
        Colour (mag) and metallicity (dex), broadcast together.

    Returns
    -------
    numpy.ndarray
        u-g (mag) of a dwarf; add :func:`gravity_ug_offset` for giants.
    """
    relation = packaged_ug_relation()
    y, feh = np.broadcast_arrays(np.asarray(g_r, dtype=float), np.asarray(fe_h, dtype=float))
    lo, hi = UG_GR_DOMAIN
    base = relation(y, feh)
    return base + UG_BLUE_SLOPE * np.minimum(y - lo, 0.0) + relation.red_slope * np.maximum(y - hi, 0.0)


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


def dwarf_teff_from_gr(g_r, fe_h=0.0):
    """Teff (K) of a dwarf whose :func:`intrinsic_colours` give this g-r (inverse of the full chain).

    Unlike :func:`gr_to_teff` (the Ivezic et al. 2008 cubic alone) this inverts the cool branch
    and the metallicity term too, so ``intrinsic_colours(dwarf_teff_from_gr(x, f), 4.6, f)["g_r"]``
    gives back ``x`` for 0.17 <= x <= 1.38 (clamped outside: g-r saturates near 1.39 for M dwarfs).

    Parameters
    ----------
    g_r : array_like
    fe_h : array_like
        [Fe/H] of the dwarfs (broadcast with ``g_r``).

    Returns
    -------
    numpy.ndarray
    """
    teff = np.linspace(2800.0, 7000.0, 4201)
    gr = intrinsic_colours(teff, 4.6, 0.0)["g_r"]  # decreasing with Teff; solar [Fe/H]: no term
    solar = np.asarray(g_r, float) - LOCUS_FEH_SLOPE * np.clip(np.asarray(fe_h, float), *LOCUS_FEH_RANGE)
    return np.interp(solar, gr[::-1], teff[::-1])


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
    r-i from the Juric et al. (2008) locus, i-z from r-i (fitted to calibObj stars), the dwarfs'
    metallicity terms at fixed g-i (Yuan et al. 2015), u-g from [Fe/H] and g-r (fitted to SSPP
    stars, extended) plus a gravity term.

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
    dwarf = logg > LOCUS_FEH_LOGG
    # dwarfs' g-r moves with metallicity (Yuan et al. 2015), their r-i lies off the locus at that
    # g-r as the SSPP dwarfs' does, i-z follows r-i; u-g follows the SSPP relation at the moved g-r
    moved_gr = g_r + LOCUS_FEH_SLOPE * np.where(dwarf, np.clip(fe_h, *LOCUS_FEH_RANGE), 0.0)
    shift = _dwarf_ri_shift(g_r, moved_gr, fe_h) * _cool_fade(teff)
    r_i = r_i + np.where(dwarf, shift, 0.0)
    g_r = moved_gr
    i_z = iz_from_ri(r_i)
    u_g = ug_from_feh(g_r, fe_h) + gravity_ug_offset(logg)
    return {"u_g": u_g, "g_r": g_r, "r_i": r_i, "i_z": i_z}


def _dwarf_ri_shift(g_r, moved_gr, fe_h) -> np.ndarray:
    """r-i a dwarf gains when its g-r moves to ``moved_gr``: along the Juric et al. locus, plus
    the SSPP dwarfs' offset from it at that g-r and [Fe/H] (:mod:`stellarexp.survey.ri_relation`)."""
    hi = RI_GR_DOMAIN[1]  # the locus saturates in g-r beyond the offset's domain: move inside it
    along = ri_from_gr(np.minimum(moved_gr, hi)) - ri_from_gr(np.minimum(g_r, hi))
    return along + packaged_ri_offset()(moved_gr, fe_h)


def _cool_fade(teff) -> np.ndarray:
    """1 above the cool branch's join, fading linearly in log Teff to 0 at the M4V anchor, where
    SSPP holds no stars and the West et al. (2011) r-i applies as it is."""
    t_anchor = RI_COOL_ANCHOR[0]
    frac = np.log10(np.asarray(teff, float) / t_anchor) / np.log10(_T_JOIN / t_anchor)
    return np.clip(frac, 0.0, 1.0)
