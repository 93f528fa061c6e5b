"""Labelled stars of the synthetic SDSS x APOGEE survey.

Labelled stars take (Teff, logg, [Fe/H]) from the real APOGEE DR17 joint distribution
(:mod:`stellarexp.survey.labels`; stars at high Galactic latitude, like the SDSS footprint),
get a mass, a luminosity and SDSS colours from empirical relations
(:mod:`~stellarexp.survey.magnitudes`, :mod:`~stellarexp.survey.colours`), a distance from a
simple Galactic model within APOGEE's reach and a dust reddening
(:mod:`~stellarexp.survey.galaxy`); only those whose apparent r falls in the unsaturated SDSS
window are kept. Every relation, its validity range and how it is extended is described in
``docs/population.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stellarexp.sdss import BANDS, EXTINCTION_COEFF, mag_to_nmgy
from stellarexp.survey import binaries, cool_dwarfs, dwarf_sequence
from stellarexp.survey import teff_colour_scatter as teff_colour_scatter_mod
from stellarexp.survey.arguments import check_n, check_nonneg, check_r_range, colour_scatter_draw
from stellarexp.survey.galaxy import GalaxyModel, draw_ebv
from stellarexp.survey.labels import LABEL_COLUMNS, apogee_arrays
from stellarexp.survey.magnitudes import (
    EXTINCTION_COEFF_H,
    absolute_magnitudes,
    photometry_columns,
    stellar_mass,
)

# APOGEE's depth: faint H (Vega) limits of its visit cohorts (short, medium, long, APOGEE-1
# long) with rough, assumed shares of the label sample (not measured; see docs/population.md).
APOGEE_DEPTH_COHORTS: tuple[tuple[float, float], ...] = ((12.2, 0.5), (12.8, 0.25), (13.3, 0.15), (13.8, 0.10))


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


def _with_companions(absmag: dict, m2, fe_h, rng, colour_scatter: float) -> dict:
    """Absolute magnitudes of the unresolved pairs (companion mass ``m2``, NaN for none)."""
    has = np.isfinite(m2)
    if not has.any():
        return absmag
    mass2 = np.where(has, m2, dwarf_sequence.MASS_RANGE[1])
    teff2, logg2 = dwarf_sequence.teff_from_mass(mass2), dwarf_sequence.logg_from_mass(mass2)
    comp = absolute_magnitudes(teff2, logg2, fe_h, mass2, colour_scatter_draw(len(m2), rng, colour_scatter))
    return binaries.combine_magnitudes(absmag, comp, has, (*BANDS, "H"))


def label_pool(labels: pd.DataFrame) -> dict[str, np.ndarray]:
    """Arrays ``teff, logg, fe_h, glat`` of a label table (glat 90 when absent), finite rows."""
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise ValueError(f"labels lack column(s) {missing}")
    pool = {c: labels[c].to_numpy(float) for c in LABEL_COLUMNS}
    pool["glat"] = labels["glat"].to_numpy(float) if "glat" in labels else np.full(len(labels), 90.0)
    ok = np.all([np.isfinite(v) for v in pool.values()], axis=0)
    if not ok.any():
        raise ValueError("labels has no row with finite teff, logg, fe_h")
    return {c: v[ok] for c, v in pool.items()}


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
    labels: pd.DataFrame | None = None,
    volume_complete: bool = False,
    binary_fraction: dict | None = None,
    teff_colour_scatter: dict | None = None,
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
    labels : pandas.DataFrame, optional
        Another joint label distribution to resample instead of APOGEE's: columns ``teff``,
        ``logg``, ``fe_h`` and optionally ``glat`` (without it ``min_abs_glat`` keeps every
        row), e.g. :func:`stellarexp.survey.labels.segue_like_labels`. Give
        ``apogee_h_limit=None`` unless the labels are APOGEE's.
    volume_complete : bool
        True when ``labels`` describe every star of a volume (e.g.
        :func:`stellarexp.survey.cool_dwarfs.cool_dwarf_labels`), not stars APOGEE already
        selected: a candidate is then kept with the probability that its distance lands in the
        window (APOGEE's depth included), not that probability given it is within APOGEE's reach.
    binary_fraction : dict, optional
        Multiplicity fraction per mass class for unresolved companions of dwarfs
        (:mod:`~stellarexp.survey.binaries`; default its Duchene & Kraus 2013 values);
        ``{"solar": 0, "m_dwarf": 0}`` gives single stars only.
    teff_colour_scatter : dict, optional
        ``{"dwarf": f, "giant": f}``: each star gets the colours of ``Teff (1 + delta)``, delta of
        that fractional spread (:mod:`~stellarexp.survey.teff_colour_scatter`); None: none.

    Returns
    -------
    pandas.DataFrame
        One row per star: ``teff``, ``logg``, ``fe_h`` (true labels), ``label_index`` (row of ``labels`` when given, else
        :func:`load_apogee_labels`), ``mass`` (Msun), ``luminosity`` (Lsun), ``mbol``,
        ``distance_pc``, ``ebv``, ``mag_h_2mass`` (approximate apparent H, Vega),
        ``extinction_<b>``, ``absmag_<b>``, ``mag_<b>`` (apparent AB, dust included) and
        ``flux_<b>`` (nanomaggies of ``mag_<b>``) for b in ugriz, and ``companion_mass`` (Msun,
        NaN for single stars); magnitudes and fluxes are those of the unresolved pair.
    """
    n = check_n(n)
    lo, hi = check_r_range(r_range)
    colour_scatter = check_nonneg("colour_scatter", colour_scatter)
    min_abs_glat = check_nonneg("min_abs_glat", min_abs_glat)
    if len(label_jitter) != 3:
        raise ValueError(f"label_jitter must have 3 entries (teff frac, logg, fe_h), got {label_jitter!r}")
    jitter = tuple(check_nonneg("label_jitter", j) for j in label_jitter)
    apogee_h_limit = _check_h_limit(apogee_h_limit)
    bright_bands = tuple(bright_bands)
    if "r" not in bright_bands or not set(bright_bands) <= set(BANDS):
        raise ValueError(f"bright_bands must be SDSS bands including 'r', got {bright_bands!r}")
    draw_ebv(1, np.random.default_rng(0), ebv_scale=ebv_scale, ebv_sigma=ebv_sigma, ebv=ebv)  # validate
    rng = np.random.default_rng(rng)
    galaxy = galaxy or GalaxyModel()
    log_d_grid, cdf = galaxy.distance_cdf()
    pool = apogee_arrays() if labels is None else label_pool(labels)
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
        offsets = teff_colour_scatter_mod.combine(
            colour_scatter_draw(batch, rng, colour_scatter),
            teff_colour_scatter_mod.colour_offsets(teff, logg, fe_h, rng, teff_colour_scatter))
        absmag = absolute_magnitudes(teff, logg, fe_h, mass, offsets)
        # mass ratios relative to the primary's sequence mass: a companion is never the hotter star
        m2 = binaries.draw_companions(dwarf_sequence.mass_from_teff(teff), logg, rng, fractions=binary_fraction)
        absmag = _with_companions(absmag, m2, fe_h, rng, colour_scatter)
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
            c_norm = np.ones(batch) if volume_complete else np.interp(logd_apogee, log_d_grid, cdf)
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
                "mass": mass[k], "ebv": e[k], "distance_pc": 10.0**log_d, "companion_mass": m2[k]}
        part.update({f"abs_{key}": val[k] for key, val in absmag.items()})
        parts.append(part)
        n_kept += k.size

    cols = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    absmag = {b: cols[f"abs_{b}"] for b in BANDS}
    phot = photometry_columns(absmag, cols["distance_pc"], cols["ebv"])
    # Rounding can move a magnitude by ~1e-15 past an edge; the selection is defined on them.
    phot["mag_r"] = np.clip(phot["mag_r"], lo, hi)
    for b in bright_bands:
        phot[f"mag_{b}"] = np.maximum(phot[f"mag_{b}"], lo)
    mu = 5.0 * np.log10(cols["distance_pc"]) - 5.0
    df = pd.DataFrame(
        {
            "teff": cols["teff"], "logg": cols["logg"], "fe_h": cols["fe_h"],
            "label_index": cols["label_index"].astype(np.int64),
            "mass": cols["mass"], "companion_mass": cols["companion_mass"], "luminosity": cols["abs_luminosity"], "mbol": cols["abs_mbol"],
            "distance_pc": cols["distance_pc"], "ebv": cols["ebv"],
            "mag_h_2mass": cols["abs_H"] + mu + EXTINCTION_COEFF_H * cols["ebv"],
            **phot,
        }
    )
    for b in BANDS:
        df[f"flux_{b}"] = mag_to_nmgy(df[f"mag_{b}"].to_numpy())
    return df


def draw_survey_stars(n: int, rng, *, dwarf_share: float = 0.0, **kwargs) -> pd.DataFrame:
    """The labelled stars of one field: APOGEE-labelled stars topped up with K/M dwarfs.

    Draws ``n`` stars from the APOGEE labels (:func:`draw_labelled_stars`), then replaces as
    many of them by cool dwarfs of a volume (:mod:`~stellarexp.survey.cool_dwarfs`, selected by
    the same r window and APOGEE depth) as it takes for dwarfs (logg > 4) to make up
    ``dwarf_share`` of the field's stars.

    Parameters
    ----------
    n : int
    rng : numpy.random.Generator or int or None
    dwarf_share : float
        Target share of logg > 4 stars, e.g. :func:`~stellarexp.survey.cool_dwarfs.paper_dwarf_share`;
        0 adds no cool dwarf.
    **kwargs
        Passed to :func:`draw_labelled_stars` (not ``labels``).

    Returns
    -------
    pandas.DataFrame
        As :func:`draw_labelled_stars`, plus ``component`` (``apogee`` or ``cool_dwarf``; for
        the latter ``label_index`` is a row of the cool-dwarf pool).
    """
    rng = np.random.default_rng(rng)
    stars = draw_labelled_stars(n, rng, **kwargs).assign(component="apogee")
    k = cool_dwarfs.cool_dwarf_count(len(stars), stars["logg"], dwarf_share)
    if k == 0:
        return stars
    cool = draw_labelled_stars(k, rng, labels=cool_dwarfs.packaged_pool(), volume_complete=True, **kwargs)
    return pd.concat([stars.iloc[: n - k], cool.assign(component="cool_dwarf")], ignore_index=True)
