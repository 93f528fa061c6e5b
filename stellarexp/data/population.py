"""Synthetic stars for the simulated SDSS x APOGEE survey.

Labelled stars take (Teff, logg, [Fe/H]) from the real APOGEE DR17 joint distribution (a
compact copy ships in :mod:`stellarexp.resources`; stars at high Galactic latitude, like the
SDSS footprint), get a mass, a luminosity and SDSS colours from empirical relations, a
distance from a simple Galactic model (within APOGEE's reach) and a dust reddening; only
those whose apparent r falls in the unsaturated SDSS window are kept.
Field stars are unlabelled neighbours with a rising number-magnitude law and colours on the
same stellar locus.

Labels reach magnitudes only through physics: labels -> (mass, L, BC) -> absolute magnitude,
labels -> empirical colours, plus distance and extinction. Every relation, its validity range
and how it is extended is described in ``docs/population.md``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from stellarexp.data.sdss import BANDS, EXTINCTION_COEFF, mag_to_nmgy

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
# APOGEE's depth: faint H (Vega) limits of its visit cohorts (short, medium, long, APOGEE-1
# long) with rough, assumed shares of the label sample (not measured; see docs/population.md).
APOGEE_DEPTH_COHORTS: tuple[tuple[float, float], ...] = ((12.2, 0.5), (12.8, 0.25), (13.3, 0.15), (13.8, 0.10))

RESOURCE_PACKAGE = "stellarexp.resources"
APOGEE_RESOURCE = "apogee_dr17_labels.npz"
LABEL_COLUMNS: tuple[str, ...] = ("teff", "logg", "fe_h")

# --- Empirical colour relations (see docs/population.md) ------------------------------------
# Range of g-r over which the Ivezic et al. (2008) Teff cubic is inverted; hotter stars are
# clamped to the blue end (none in APOGEE, whose Teff <= 6.8 kK maps to g-r >= 0.17).
_GR_TEFF_GRID = np.linspace(-0.4, 1.0, 1401)
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


# ---------------------------------------------------------------------------------------------
# APOGEE labels
# ---------------------------------------------------------------------------------------------
def _radec_from_apogee_id(ids) -> tuple[np.ndarray, np.ndarray]:
    """J2000 RA/Dec (deg) encoded in 2MASS-style ids ``2MHHMMSSss+DDMMSSs`` (NaN if not)."""
    parts = pd.Series(ids, dtype=str).str.extract(
        r"^2M(\d\d)(\d\d)(\d\d)(\d\d)([+-])(\d\d)(\d\d)(\d\d)(\d)$"
    )
    num = parts.drop(columns=4).astype(float)
    ra = 15.0 * (num[0] + num[1] / 60.0 + (num[2] + num[3] / 100.0) / 3600.0)
    sign = np.where(parts[4] == "-", -1.0, 1.0)
    dec = sign * (num[5] + num[6] / 60.0 + (num[7] + num[8] / 10.0) / 3600.0)
    return ra.to_numpy(), dec.to_numpy()


def build_apogee_resource(csv_path, out_path) -> int:
    """Write the compact APOGEE label resource from an allStar-style CSV.

    Keeps one row per ``apogee_id`` (the first; repeat visits from other fields or
    telescopes would otherwise weigh twice), drops rows with a NaN or -9999 label or an id
    that does not encode a position, and stores the position decoded from the id.

    Parameters
    ----------
    csv_path : path-like
        CSV with columns ``apogee_id``, ``teff``, ``logg``, ``fe_h``.
    out_path : path-like
        Destination ``.npz`` (compressed float32 arrays ``teff``, ``logg``, ``fe_h`` and
        ``glat``, the Galactic latitude decoded from the id).

    Returns
    -------
    int
        Number of rows written.
    """
    from astropy.coordinates import SkyCoord

    df = pd.read_csv(csv_path)
    missing = [c for c in ("apogee_id", *LABEL_COLUMNS) if c not in df.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing}")
    df = df.drop_duplicates("apogee_id", keep="first")
    labels = df[list(LABEL_COLUMNS)].astype(float)
    ra, dec = _radec_from_apogee_id(df["apogee_id"])
    valid = (
        np.isfinite(labels).all(axis=1).to_numpy()
        & (labels > -9000).all(axis=1).to_numpy()
        & np.isfinite(ra)
        & np.isfinite(dec)
    )
    labels, ra, dec = labels[valid], ra[valid], dec[valid]
    glat = SkyCoord(ra=ra, dec=dec, unit="deg", frame="icrs").galactic.b.deg
    arrays = {c: labels[c].to_numpy(np.float32) for c in LABEL_COLUMNS}
    arrays["glat"] = glat.astype(np.float32)
    np.savez_compressed(
        out_path,
        **arrays,
        source=np.array(
            "APOGEE DR17 allStar (SDSS-IV), 50k-row subset; one row per APOGEE_ID; rows with "
            "NaN/-9999 labels removed; glat from the position encoded in APOGEE_ID"
        ),
    )
    return int(valid.sum())


_RESOURCE_COLUMNS: tuple[str, ...] = (*LABEL_COLUMNS, "glat")


@functools.lru_cache(maxsize=1)
def _apogee_arrays() -> dict[str, np.ndarray]:
    path = resources.files(RESOURCE_PACKAGE).joinpath(APOGEE_RESOURCE)
    with path.open("rb") as fh, np.load(fh) as npz:
        return {c: npz[c].astype(float) for c in _RESOURCE_COLUMNS}


def load_apogee_labels() -> pd.DataFrame:
    """Real APOGEE DR17 labels shipped with the package.

    Returns
    -------
    pandas.DataFrame
        One row per star: ``teff`` (K), ``logg`` (cgs dex), ``fe_h`` (dex) and ``glat``
        (Galactic latitude in deg, from the position encoded in the APOGEE id); float64.
        Mostly red giants (about 7% have logg > 4).
    """
    return pd.DataFrame({c: a.copy() for c, a in _apogee_arrays().items()})


# ---------------------------------------------------------------------------------------------
# Colours
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Bolometric corrections, mass, luminosity
# ---------------------------------------------------------------------------------------------
_BC_LOGT_GRID = np.linspace(np.log10(2000.0), np.log10(20000.0), 361)


@functools.lru_cache(maxsize=1)
def _blackbody_bc_table() -> np.ndarray:
    """Raw blackbody BC_x = Mbol - M_x (AB) on ``_BC_LOGT_GRID``: columns u g r i z H."""
    import astropy.units as u
    import speclite.filters

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

    Dwarfs: main-sequence M = (Teff / 5772 K)^1.7 (from L ~ M^4, R ~ M^0.8), clipped to
    0.1-2.5. Giants: 0.9 Msun at [Fe/H] <= -1 rising to 1.2 Msun at [Fe/H] >= 0. The two
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
    log_dwarf = np.log10(np.clip((teff / TEFF_SUN) ** 1.7, 0.1, 2.5))
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


# ---------------------------------------------------------------------------------------------
# Galaxy model and dust
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GalaxyModel:
    """Star number density along high-latitude sight lines (rounded Juric et al. 2008 form).

    Thin and thick exponential discs plus a flattened power-law halo, averaged over the
    sky with ``|b| >= b_min_deg`` (weights cos b) and all longitudes. Lengths in pc.
    """

    r_sun: float = 8000.0
    thin_height: float = 300.0
    thin_length: float = 2600.0
    thick_height: float = 900.0
    thick_length: float = 3600.0
    thick_fraction: float = 0.12
    halo_fraction: float = 0.005
    halo_power: float = 2.8
    halo_flattening: float = 0.64
    b_min_deg: float = 30.0
    d_min_pc: float = 3.0
    d_max_pc: float = 300_000.0

    def density(self, d_pc, l_deg, b_deg):
        """Relative number density at distance d along (l, b); the thin disc is 1 at the Sun."""
        d = np.asarray(d_pc, dtype=float)
        l_rad, b_rad = np.radians(l_deg), np.radians(b_deg)
        x = self.r_sun - d * np.cos(b_rad) * np.cos(l_rad)
        y = d * np.cos(b_rad) * np.sin(l_rad)
        z = np.abs(d * np.sin(b_rad))
        r = np.hypot(x, y)
        thin = np.exp(-(r - self.r_sun) / self.thin_length - z / self.thin_height)
        thick = self.thick_fraction * np.exp(-(r - self.r_sun) / self.thick_length - z / self.thick_height)
        r_halo = np.sqrt(r**2 + (z / self.halo_flattening) ** 2)
        halo = self.halo_fraction * (self.r_sun / r_halo) ** self.halo_power
        return thin + thick + halo

    def distance_cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """Sky-averaged cumulative distribution of distance, on a log10(d) grid.

        Returns
        -------
        log_d, cdf : numpy.ndarray
            Read-only; ``cdf`` is strictly increasing from 0 to 1.
        """
        return _distance_cdf(self)


@functools.lru_cache(maxsize=8)
def _distance_cdf(model: GalaxyModel) -> tuple[np.ndarray, np.ndarray]:
    log_d = np.linspace(np.log10(model.d_min_pc), np.log10(model.d_max_pc), 1201)
    b = np.linspace(model.b_min_deg, 90.0, 13)[:, None, None]
    l_deg = np.linspace(0.0, 360.0, 24, endpoint=False)[None, :, None]
    d = 10.0 ** log_d[None, None, :]
    w_b = np.cos(np.radians(b)) + 1e-3  # solid-angle weight; keep the pole in the average
    rho = (model.density(d, l_deg, b) * w_b).sum(axis=(0, 1)) / (w_b.sum() * l_deg.size)
    pdf = 10.0 ** (3 * log_d) * rho  # dN/dlog d ~ d^3 rho
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(log_d))])
    cdf = cdf / cdf[-1] + np.arange(cdf.size) * 1e-15  # strictly increasing for inversion
    cdf /= cdf[-1]
    log_d.flags.writeable = False
    cdf.flags.writeable = False
    return log_d, cdf


def draw_ebv(n: int, rng, *, ebv_scale: float = 0.03, ebv_sigma: float = 0.5, ebv=None):
    """Draw E(B-V) values typical of high Galactic latitude.

    Parameters
    ----------
    n : int
    rng : numpy.random.Generator
    ebv_scale : float
        Median E(B-V) (mag) of a log-normal; 0 gives no reddening.
    ebv_sigma : float
        Width of the log-normal in natural log units.
    ebv : float, optional
        If given, every star gets this value (e.g. one sight line per field).

    Returns
    -------
    numpy.ndarray
    """
    if ebv is not None:
        if not np.isfinite(ebv) or ebv < 0:
            raise ValueError(f"ebv must be a finite value >= 0, got {ebv!r}")
        return np.full(n, float(ebv))
    if not np.isfinite(ebv_scale) or ebv_scale < 0:
        raise ValueError(f"ebv_scale must be >= 0, got {ebv_scale!r}")
    if not np.isfinite(ebv_sigma) or ebv_sigma < 0:
        raise ValueError(f"ebv_sigma must be >= 0, got {ebv_sigma!r}")
    return ebv_scale * np.exp(ebv_sigma * rng.normal(size=n))


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------
def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


def _check_r_range(r_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in r_range)
    except (TypeError, ValueError):
        raise ValueError(f"r_range must be a pair (bright, faint), got {r_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        raise ValueError(f"r_range must be (bright, faint) with bright < faint, got {r_range!r}")
    return lo, hi


def _check_nonneg(name: str, value) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite value >= 0, got {value!r}")
    return value


def _colour_scatter(n: int, rng, sigma: float) -> dict[str, np.ndarray] | None:
    if sigma == 0:
        return None
    return {k: rng.normal(0.0, sigma, n) for k in ("u_g", "g_r", "r_i", "i_z")}


def _photometry_columns(absmag: dict, distance_pc, ebv) -> dict[str, np.ndarray]:
    """extinction_*, absmag_* and mag_* (apparent, with dust) columns."""
    mu = 5.0 * np.log10(distance_pc) - 5.0
    out = {}
    for b in BANDS:
        out[f"extinction_{b}"] = EXTINCTION_COEFF[b] * ebv
    for b in BANDS:
        out[f"absmag_{b}"] = absmag[b]
    for b in BANDS:
        out[f"mag_{b}"] = absmag[b] + mu + out[f"extinction_{b}"]
    return out


# ---------------------------------------------------------------------------------------------
# Labelled stars
# ---------------------------------------------------------------------------------------------
def _check_h_limit(spec):
    """Validate ``apogee_h_limit``: None, a finite float, or (limit, weight) pairs."""
    if spec is None:
        return None
    arr = np.asarray(spec, dtype=float)
    if arr.ndim == 0:
        if not np.isfinite(arr):
            raise ValueError(f"apogee_h_limit must be finite, got {spec!r}")
        return float(arr)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all() or (arr[:, 1] < 0).any() \
            or arr[:, 1].sum() <= 0:
        raise ValueError(f"apogee_h_limit must be a float or (limit, weight>=0) pairs, got {spec!r}")
    return arr


_MAX_CANDIDATES = 20_000_000  # guard against near-impossible selections looping for minutes


def _draw_h_limit(spec, n: int, rng) -> np.ndarray:
    if np.ndim(spec) == 0:
        return np.full(n, float(spec))
    return rng.choice(spec[:, 0], size=n, p=spec[:, 1] / spec[:, 1].sum())


def draw_labelled_stars(
    n: int,
    rng,
    *,
    r_range: tuple[float, float] = (14.0, 19.5),
    bright_bands: tuple[str, ...] = ("g", "r", "i"),
    ebv_scale: float = 0.03,
    ebv_sigma: float = 0.5,
    ebv: float | None = None,
    min_abs_glat: float = 30.0,
    apogee_h_limit=APOGEE_DEPTH_COHORTS,
    label_jitter: tuple[float, float, float] = (0.005, 0.02, 0.01),
    colour_scatter: float = 0.02,
    galaxy: GalaxyModel | None = None,
) -> pd.DataFrame:
    """Draw ``n`` APOGEE-labelled stars that an unsaturated SDSS selection would keep.

    Labels are resampled from real APOGEE DR17 stars in the SDSS-like footprint
    (``|b| >= min_abs_glat``); each candidate gets a mass, a luminosity, absolute magnitudes,
    E(B-V) and a distance from :class:`GalaxyModel` (truncated at APOGEE's reach,
    ``apogee_h_limit``), and is kept only if its apparent r (with dust) lies in
    ``r_range`` and none of ``bright_bands`` is brighter than ``r_range[0]``. This is done
    exactly without wasted distance draws: a candidate is kept with the probability that its
    distance lands in the allowed window and the distance is then drawn from the model
    restricted to that window. The selection raises the dwarf share above APOGEE's (mostly
    through the footprint; see ``docs/population.md``).

    Parameters
    ----------
    n : int
        Number of stars (> 0).
    rng : numpy.random.Generator or int or None
        Random source (an int seeds a new Generator).
    r_range : (float, float)
        Bright and faint limits of apparent r (mag).
    bright_bands : tuple of str
        Bands that must also be at least as faint as ``r_range[0]`` (SDSS saturates at about
        the same magnitude in g, r and i; red giants are ~0.35 mag brighter in i than in r).
        Must include ``"r"``.
    ebv_scale, ebv_sigma, ebv
        Reddening, see :func:`draw_ebv`.
    min_abs_glat : float
        Footprint proxy: only APOGEE stars with ``|b| >=`` this (deg) are resampled (SDSS
        imaging avoids the Galactic plane). 0 uses all rows.
    apogee_h_limit : float, sequence of (float, float) or None
        Faintest 2MASS H (Vega) APOGEE reached. The labels describe stars APOGEE could see,
        so a candidate's distance is drawn from the model cut at that depth. A sequence of
        ``(limit, weight)`` pairs draws each candidate's limit from that mixture (default
        :data:`APOGEE_DEPTH_COHORTS`); None: no cut (APOGEE giants then land far out in the
        halo).
    label_jitter : (float, float, float)
        Gaussian jitter of resampled labels: fractional Teff, logg (dex), [Fe/H] (dex);
        avoids exact duplicates when a real star is drawn twice. Zeros keep the real rows.
    colour_scatter : float
        Intrinsic star-to-star scatter (mag) added to each of u-g, g-r, r-i, i-z.
    galaxy : GalaxyModel, optional
        Distance model (default :class:`GalaxyModel`).

    Returns
    -------
    pandas.DataFrame
        One row per star: ``teff``, ``logg``, ``fe_h`` (true labels), ``label_index`` (row of
        :func:`load_apogee_labels`), ``mass`` (Msun), ``luminosity`` (Lsun), ``mbol``,
        ``distance_pc``, ``ebv``, ``mag_h_2mass`` (approximate apparent H, Vega),
        ``extinction_<b>``, ``absmag_<b>``, ``mag_<b>`` (apparent AB, dust included) and
        ``flux_<b>`` (nanomaggies of ``mag_<b>``) for b in ugriz.
    """
    n = _check_n(n)
    lo, hi = _check_r_range(r_range)
    colour_scatter = _check_nonneg("colour_scatter", colour_scatter)
    min_abs_glat = _check_nonneg("min_abs_glat", min_abs_glat)
    if len(label_jitter) != 3:
        raise ValueError(f"label_jitter must have 3 entries (teff frac, logg, fe_h), got {label_jitter!r}")
    jitter = tuple(_check_nonneg("label_jitter", j) for j in label_jitter)
    apogee_h_limit = _check_h_limit(apogee_h_limit)
    bright_bands = tuple(bright_bands)
    if "r" not in bright_bands or not set(bright_bands) <= set(BANDS):
        raise ValueError(f"bright_bands must be SDSS bands including 'r', got {bright_bands!r}")
    draw_ebv(1, np.random.default_rng(0), ebv_scale=ebv_scale, ebv_sigma=ebv_sigma, ebv=ebv)  # validate
    rng = np.random.default_rng(rng)
    galaxy = galaxy or GalaxyModel()
    log_d_grid, cdf = galaxy.distance_cdf()
    pool = _apogee_arrays()
    rows = np.flatnonzero(np.abs(pool["glat"]) >= min_abs_glat)
    if rows.size == 0:
        raise ValueError(f"min_abs_glat={min_abs_glat!r} leaves no APOGEE star to draw from")

    parts: list[dict[str, np.ndarray]] = []
    n_kept = n_tried = 0
    acceptance = None
    while n_kept < n:
        need = n - n_kept
        # Size batches from the running acceptance so a few iterations suffice.
        batch = 8192 if acceptance is None else int(min(1_000_000, max(1024, 1.3 * need / acceptance)))
        idx = rows[rng.integers(0, rows.size, batch)]
        teff = pool["teff"][idx] * (1.0 + jitter[0] * rng.normal(size=batch))
        logg = pool["logg"][idx] + jitter[1] * rng.normal(size=batch)
        fe_h = pool["fe_h"][idx] + jitter[2] * rng.normal(size=batch)
        mass = stellar_mass(teff, logg, fe_h, rng)
        absmag = absolute_magnitudes(teff, logg, fe_h, mass, _colour_scatter(batch, rng, colour_scatter))
        e = draw_ebv(batch, rng, ebv_scale=ebv_scale, ebv_sigma=ebv_sigma, ebv=ebv)
        # Distance window that puts apparent r inside r_range (no bright band brighter) ...
        logd_lo = np.max([(lo - absmag[b] - EXTINCTION_COEFF[b] * e + 5.0) / 5.0 for b in bright_bands], axis=0)
        logd_hi = (hi - absmag["r"] - EXTINCTION_COEFF["r"] * e + 5.0) / 5.0
        if apogee_h_limit is not None:
            # ... within APOGEE's reach: distances follow the model truncated at that depth.
            h_lim = _draw_h_limit(apogee_h_limit, batch, rng)
            logd_apogee = (h_lim - absmag["H"] - EXTINCTION_COEFF_H * e + 5.0) / 5.0
            logd_lo = np.minimum(logd_lo, logd_apogee)
            logd_hi = np.minimum(logd_hi, logd_apogee)
            c_norm = np.interp(logd_apogee, log_d_grid, cdf)
        else:
            c_norm = np.ones(batch)
        c_lo = np.interp(logd_lo, log_d_grid, cdf)
        c_hi = np.interp(logd_hi, log_d_grid, cdf)
        prob = np.divide(np.maximum(c_hi - c_lo, 0.0), c_norm, out=np.zeros(batch), where=c_norm > 0)
        keep = rng.random(batch) < prob
        n_tried += batch
        acceptance = max((n_kept + keep.sum()) / n_tried, 1e-6)
        if n_kept == 0 and not keep.any() and prob.max() <= 0.0:
            raise ValueError(
                f"r_range={r_range!r} is unreachable for APOGEE stars under this distance model "
                f"and APOGEE depth (no candidate can land in it)"
            )
        if n_tried > _MAX_CANDIDATES:
            raise RuntimeError(
                f"only {n_kept + int(keep.sum())} of {n} stars kept after {n_tried} candidates; "
                f"widen r_range={r_range!r} or relax apogee_h_limit"
            )
        k = np.flatnonzero(keep)[:need]
        u = c_lo[k] + rng.random(k.size) * np.maximum(c_hi[k] - c_lo[k], 0.0)
        log_d = np.clip(np.interp(u, cdf, log_d_grid), logd_lo[k], logd_hi[k])
        part = {"label_index": idx[k], "teff": teff[k], "logg": logg[k], "fe_h": fe_h[k],
                "mass": mass[k], "ebv": e[k], "distance_pc": 10.0**log_d}
        part.update({f"abs_{key}": val[k] for key, val in absmag.items()})
        parts.append(part)
        n_kept += k.size

    cols = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    absmag = {b: cols[f"abs_{b}"] for b in BANDS}
    phot = _photometry_columns(absmag, cols["distance_pc"], cols["ebv"])
    # Rounding can move a magnitude by ~1e-15 past an edge; the selection is defined on them.
    phot["mag_r"] = np.clip(phot["mag_r"], lo, hi)
    for b in bright_bands:
        phot[f"mag_{b}"] = np.maximum(phot[f"mag_{b}"], lo)
    mu = 5.0 * np.log10(cols["distance_pc"]) - 5.0
    df = pd.DataFrame(
        {
            "teff": cols["teff"], "logg": cols["logg"], "fe_h": cols["fe_h"],
            "label_index": cols["label_index"].astype(np.int64),
            "mass": cols["mass"], "luminosity": cols["abs_luminosity"], "mbol": cols["abs_mbol"],
            "distance_pc": cols["distance_pc"], "ebv": cols["ebv"],
            "mag_h_2mass": cols["abs_H"] + mu + EXTINCTION_COEFF_H * cols["ebv"],
            **phot,
        }
    )
    for b in BANDS:
        df[f"flux_{b}"] = mag_to_nmgy(df[f"mag_{b}"].to_numpy())
    return df


def observed_labels(
    truth_df: pd.DataFrame,
    rng,
    *,
    teff_frac_err: float = 0.02,
    logg_err: float = 0.1,
    fe_h_err: float = 0.05,
    err_spread: float = 0.3,
) -> pd.DataFrame:
    """APOGEE/ASPCAP-like measured labels: truth plus Gaussian errors of varying size.

    Each star's error is the nominal value times a log-normal factor (median 1, width
    ``err_spread`` in natural log), and the observed label is truth + N(0, error). The
    reported ``*_err`` is that star's true error.

    Parameters
    ----------
    truth_df : pandas.DataFrame
        Must contain ``teff``, ``logg``, ``fe_h``.
    rng : numpy.random.Generator or int or None
    teff_frac_err, logg_err, fe_h_err : float
        Nominal errors: fraction of Teff, dex, dex.
    err_spread : float

    Returns
    -------
    pandas.DataFrame
        ``teff``, ``logg``, ``fe_h``, ``teff_err``, ``logg_err``, ``fe_h_err``; same index as
        ``truth_df``.
    """
    missing = [c for c in LABEL_COLUMNS if c not in truth_df.columns]
    if missing:
        raise ValueError(f"truth_df lacks label columns {missing}")
    for name, val in (("teff_frac_err", teff_frac_err), ("logg_err", logg_err),
                      ("fe_h_err", fe_h_err), ("err_spread", err_spread)):
        _check_nonneg(name, val)
    rng = np.random.default_rng(rng)
    n = len(truth_df)
    teff = truth_df["teff"].to_numpy(float)
    nominal = {"teff": teff_frac_err * teff, "logg": np.full(n, logg_err), "fe_h": np.full(n, fe_h_err)}
    out = {}
    errs = {}
    for c in LABEL_COLUMNS:
        errs[c] = nominal[c] * np.exp(err_spread * rng.normal(size=n))
        out[c] = truth_df[c].to_numpy(float) + errs[c] * rng.normal(size=n)
    for c in LABEL_COLUMNS:
        out[f"{c}_err"] = errs[c]
    return pd.DataFrame(out, index=truth_df.index)


# ---------------------------------------------------------------------------------------------
# Field stars
# ---------------------------------------------------------------------------------------------
def _main_sequence_logg(teff):
    # Roughly 4.9 for mid-M dwarfs, 4.44 for the Sun, 4.3 for late F dwarfs.
    return np.clip(LOGG_SUN + 0.45 * (TEFF_SUN - np.asarray(teff, dtype=float)) / 2500.0, 4.0, 5.0)


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def draw_field_stars(
    n: int,
    rng,
    *,
    r_range: tuple[float, float] = (13.0, 23.0),
    count_slope: float = 0.18,
    halo_fraction_bright: float = 0.1,
    halo_fraction_faint: float = 0.75,
    mdwarf_fraction_bright: float = 0.10,
    mdwarf_fraction_faint: float = 0.40,
    turnoff_fraction: float = 0.33,
    giant_fraction: float = 0.03,
    ebv_scale: float = 0.03,
    ebv_sigma: float = 0.5,
    ebv: float | None = None,
    colour_scatter: float = 0.02,
) -> pd.DataFrame:
    """Draw unlabelled neighbour stars for a high-latitude field.

    Apparent r follows d log10 N / dr = ``count_slope`` (counts rising to the faint end;
    0.18 is the slope measured on real SDSS stars of run 4510 camcol 4, and gives ~1% of
    stars brighter than r = 14.5 over 13-23, so saturated neighbours occur now and then).
    Each star is an M dwarf, an F/G turn-off star, a G/K dwarf or a giant; the M-dwarf
    share rises from ``mdwarf_fraction_bright`` to ``mdwarf_fraction_faint`` around r = 18
    and the halo share (metal-poor, [Fe/H] ~ -1.5) from ``halo_fraction_bright`` to
    ``halo_fraction_faint`` around r = 19.5, as seen at high latitude. Labels are turned into
    colours with the same relations as labelled stars (:func:`intrinsic_colours`).

    Parameters
    ----------
    n : int
        Number of stars (> 0).
    rng : numpy.random.Generator or int or None
    r_range : (float, float)
        Bright and faint limits of apparent r (mag, dust included).
    count_slope : float
        d log10 N / d r (>= 0; 0 gives a flat distribution).
    halo_fraction_bright, halo_fraction_faint : float
        Halo share of non-M-dwarf stars at bright and faint magnitudes (0..1).
    mdwarf_fraction_bright, mdwarf_fraction_faint : float
        M-dwarf share at bright and faint magnitudes (0..1).
    turnoff_fraction, giant_fraction : float
        Shares of F/G turn-off stars and of giants (0..1); G/K dwarfs fill the rest.
    ebv_scale, ebv_sigma, ebv
        Reddening, see :func:`draw_ebv`.
    colour_scatter : float
        Intrinsic scatter (mag) of each colour.

    Returns
    -------
    pandas.DataFrame
        ``teff``, ``logg``, ``fe_h``, ``population`` ('disc'/'halo'), ``kind``
        ('mdwarf', 'turnoff', 'gk_dwarf', 'giant'), ``ebv``, ``extinction_<b>``, ``mag_<b>``
        and ``flux_<b>`` for b in ugriz.
    """
    n = _check_n(n)
    lo, hi = _check_r_range(r_range)
    count_slope = _check_nonneg("count_slope", count_slope)
    colour_scatter = _check_nonneg("colour_scatter", colour_scatter)
    fractions = {
        "halo_fraction_bright": halo_fraction_bright, "halo_fraction_faint": halo_fraction_faint,
        "mdwarf_fraction_bright": mdwarf_fraction_bright, "mdwarf_fraction_faint": mdwarf_fraction_faint,
        "turnoff_fraction": turnoff_fraction, "giant_fraction": giant_fraction,
    }
    for name, f in fractions.items():
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"{name} must be within 0..1, got {f!r}")
    if max(mdwarf_fraction_bright, mdwarf_fraction_faint) + turnoff_fraction + giant_fraction > 1.0:
        raise ValueError(
            "mdwarf_fraction_bright/faint + turnoff_fraction + giant_fraction must not exceed 1, got "
            f"{max(mdwarf_fraction_bright, mdwarf_fraction_faint)} + {turnoff_fraction} + {giant_fraction}"
        )
    draw_ebv(1, np.random.default_rng(0), ebv_scale=ebv_scale, ebv_sigma=ebv_sigma, ebv=ebv)
    rng = np.random.default_rng(rng)

    # Truncated exponential in r: p(r) ~ 10^(slope r).
    u = rng.random(n)
    if count_slope > 0:
        k = count_slope * np.log(10.0)
        r = lo + np.log1p(u * np.expm1(k * (hi - lo))) / k
    else:
        r = lo + u * (hi - lo)

    f_m = mdwarf_fraction_bright + (mdwarf_fraction_faint - mdwarf_fraction_bright) * _logistic(r - 18.0)
    f_halo = halo_fraction_bright + (halo_fraction_faint - halo_fraction_bright) * _logistic(r - 19.5)
    x = rng.random(n)
    kind = np.select(
        [x < f_m, x < f_m + turnoff_fraction, x < f_m + turnoff_fraction + giant_fraction],
        ["mdwarf", "turnoff", "giant"],
        "gk_dwarf",
    )
    halo = (kind != "mdwarf") & (rng.random(n) < f_halo)  # halo M dwarfs are too faint to matter
    teff = np.select(
        [kind == "mdwarf", kind == "turnoff", kind == "giant"],
        [
            rng.uniform(3300.0, 3900.0, n),
            np.clip(rng.normal(6200.0, 300.0, n), 5300.0, 7000.0),
            rng.uniform(4000.0, 5200.0, n),
        ],
        rng.uniform(4000.0, 5600.0, n),
    )
    giant = kind == "giant"
    # Halo turn-off stars are slightly evolved: lower logg than the disc main sequence.
    logg = np.where(giant, rng.uniform(1.5, 3.2, n), _main_sequence_logg(teff) - np.where(halo, 0.2, 0.0))
    fe_h = np.where(
        halo, np.clip(rng.normal(-1.5, 0.4, n), -2.8, -0.5), np.clip(rng.normal(-0.5, 0.3, n), -1.5, 0.5)
    )

    col = intrinsic_colours(teff, logg, fe_h)
    scat = _colour_scatter(n, rng, colour_scatter)
    if scat:
        col = {key: v + scat[key] for key, v in col.items()}
    e = draw_ebv(n, rng, ebv_scale=ebv_scale, ebv_sigma=ebv_sigma, ebv=ebv)
    ext = {b: EXTINCTION_COEFF[b] * e for b in BANDS}
    r0 = r - ext["r"]  # dust-free r; the colours are intrinsic
    dust_free = {"r": r0, "g": r0 + col["g_r"]}
    dust_free["u"] = dust_free["g"] + col["u_g"]
    dust_free["i"] = r0 - col["r_i"]
    dust_free["z"] = dust_free["i"] - col["i_z"]

    df = pd.DataFrame({"teff": teff, "logg": logg, "fe_h": fe_h,
                       "population": np.where(halo, "halo", "disc"), "kind": kind, "ebv": e})
    for b in BANDS:
        df[f"extinction_{b}"] = ext[b]
    for b in BANDS:
        df[f"mag_{b}"] = r if b == "r" else dust_free[b] + ext[b]
    for b in BANDS:
        df[f"flux_{b}"] = mag_to_nmgy(df[f"mag_{b}"].to_numpy())
    return df
