"""Colour-locus comparisons: the dwarf locus per metallicity and the width of the locus.

Dwarf locus: in cells of g-r x [Fe/H], the median u-g, r-i and i-z of simulated dwarfs against
those of SSPP stars (u-g is the metallicity colour; Ivezic et al. 2008). Locus width: the
robust scatter of the Ivezic et al. (2004) principal colours w and y, which measure the
distance from the stellar locus, against calibObj stars of the same brightness (too narrow a
simulated locus makes the colours cleaner functions of the labels than real colours are;
too wide a locus would buy realism by noise).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stellarexp.constants import BANDS
from stellarexp.survey.realism.checks import Check, robust_sigma
from stellarexp.survey.realism.noise import common_range

GR_EDGES: tuple[float, ...] = tuple(np.round(np.arange(0.2, 1.2001, 0.1), 2))
FEH_EDGES: tuple[float, ...] = (-1.5, -1.0, -0.5, 0.0, 0.5)
DWARF_LOGG_MIN = 3.8
LOCUS_TOLERANCE: dict[str, float] = {"ug": 0.10, "ri": 0.04, "iz": 0.04}
MIN_STARS_PER_CELL = 15

# Ivezic et al. (2004, AN 325, 583): principal colours perpendicular to the stellar locus
# (coefficients of u, g, r, i, z and a constant) and the coordinate along the locus, P1, with
# the range over which each is defined (the same coefficients as LSST's pipe_analysis
# colour-analysis transforms).
PRINCIPAL_COLOURS: dict[str, dict] = {
    "w": {"coef": (0.0, -0.227, 0.792, -0.567, 0.0, 0.050),
          "p1": (0.0, 0.928, -0.556, -0.372, 0.0, -0.425), "p1_range": (-0.2, 0.6)},
    "y": {"coef": (0.0, 0.0, -0.270, 0.800, -0.534, 0.054),
          "p1": (0.0, 0.0, 0.895, -0.448, -0.447, -0.600), "p1_range": (0.1, 1.2)},
}
WIDTH_TOLERANCE = 0.30
BRIGHT_R = 18.0  # mag: shown when the samples share no r range (orientation only, not judged)
MIN_WIDTH_STARS = 100


def _cells(df: pd.DataFrame, gr_edges, feh_edges) -> pd.Series:
    gi = np.digitize(df["gr"].to_numpy(float), gr_edges) - 1
    fi = np.digitize(df["feh"].to_numpy(float), feh_edges) - 1
    ok = (gi >= 0) & (gi < len(gr_edges) - 1) & (fi >= 0) & (fi < len(feh_edges) - 1)
    return pd.Series(np.where(ok, gi * 100 + fi, -1), index=df.index)


def _matched_difference(sim: pd.DataFrame, real: pd.DataFrame, min_stars: int) -> float:
    """Median simulated u-g minus the real stars' u-g at the simulated stars' g-r and [Fe/H].

    Within a cell the two samples' [Fe/H] (and g-r) distributions can differ (an APOGEE-like
    survey holds mostly disc stars, SSPP many halo stars): a plane ``u-g = a + b (g-r) + c [Fe/H]``
    fitted to the real stars of the cell, evaluated at the simulated stars, separates the colour
    physics from that difference in composition. Diagnostic only; the verdict uses the medians.
    """
    if len(sim) < min_stars or len(real) < min_stars:
        return float("nan")
    design = np.column_stack([np.ones(len(real)), real["gr"], real["feh"]])
    coef = np.linalg.lstsq(design, real["ug"].to_numpy(float), rcond=None)[0]
    expected = coef[0] + coef[1] * sim["gr"].to_numpy(float) + coef[2] * sim["feh"].to_numpy(float)
    return float(np.median(sim["ug"].to_numpy(float) - expected))


def dwarf_locus(sim: pd.DataFrame, real: pd.DataFrame, *, sample: str, min_cells: int = 3,
                min_feh_bins: int = 1, gr_edges=GR_EDGES, feh_edges=FEH_EDGES,
                min_stars: int = MIN_STARS_PER_CELL, tolerance: dict | None = None,
                logg_min: float = DWARF_LOGG_MIN) -> Check:
    """Median colours of simulated dwarfs against SSPP stars, cell by cell.

    Parameters
    ----------
    sim : pandas.DataFrame
        Simulated stars: dereddened ``ug, gr, ri, iz``, label ``feh`` and ``logg``.
    real : pandas.DataFrame
        SSPP stars: ``ug, gr, ri, iz`` (as published) and ``feh``.
    sample : str
        Name of the simulated sample (for the report).
    min_cells, min_feh_bins : int
        Comparable cells (at least ``min_stars`` stars on both sides) needed to judge, and
        distinct [Fe/H] bins among them.
    gr_edges, feh_edges : sequence of float
        Cell edges (mag, dex).
    tolerance : dict, optional
        Largest |median difference| per colour (default u-g 0.10, r-i and i-z 0.04 mag).
    logg_min : float
        Simulated stars with label logg above this count as dwarfs.

    Returns
    -------
    Check
        Value: the largest |median u-g difference| over comparable cells.
    """
    tol = dict(tolerance or LOCUS_TOLERANCE)
    dwarfs = sim[sim["logg"].to_numpy(float) > logg_min]
    cs, cr = _cells(dwarfs, gr_edges, feh_edges), _cells(real, gr_edges, feh_edges)
    rows = []
    for cell in sorted(set(cs[cs >= 0]) | set(cr[cr >= 0])):
        s, r = dwarfs[cs == cell], real[cr == cell]
        gi, fi = divmod(int(cell), 100)
        row = {"gr_lo": gr_edges[gi], "gr_hi": gr_edges[gi + 1], "feh_lo": feh_edges[fi],
               "feh_hi": feh_edges[fi + 1], "n_sim": len(s), "n_real": len(r)}
        for c in ("ug", "ri", "iz"):
            row[f"{c}_sim"] = float(np.median(s[c])) if len(s) else np.nan
            row[f"{c}_real"] = float(np.median(r[c])) if len(r) else np.nan
            row[f"d{c}"] = row[f"{c}_sim"] - row[f"{c}_real"]
        row["dug_matched"] = _matched_difference(s, r, min_stars)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=["gr_lo", "gr_hi", "feh_lo", "feh_hi", "n_sim", "n_real"])
    comparable = (table["n_sim"] >= min_stars) & (table["n_real"] >= min_stars) if len(table) else \
        pd.Series([], dtype=bool)
    table["comparable"] = comparable
    within = np.ones(len(table), dtype=bool)
    for c, t in tol.items():
        if len(table):
            within &= np.abs(table[f"d{c}"].to_numpy(float)) <= t
    table["within"] = within & comparable
    comp = table[comparable]
    n_cells, n_feh = len(comp), comp["feh_lo"].nunique() if len(comp) else 0
    target = (f"every cell with >= {min_stars} stars on both sides: |d(u-g)| <= {tol['ug']:.2f}, "
              f"|d(r-i)|, |d(i-z)| <= {tol['ri']:.2f}; >= {min_cells} cells"
              + (f" in >= {min_feh_bins} [Fe/H] bins" if min_feh_bins > 1 else ""))
    enough = n_cells >= min_cells and n_feh >= min_feh_bins
    worst = {c: float(np.abs(comp[f"d{c}"]).max()) if n_cells else float("nan") for c in ("ug", "ri", "iz")}
    passed = bool(comp["within"].all()) if enough else (False if n_cells and not comp["within"].all() else None)
    detail = (f"{n_cells} comparable cells in {n_feh} [Fe/H] bins ({len(dwarfs)} simulated dwarfs, "
              f"{len(real)} SSPP stars); largest |d| u-g {worst['ug']:.3f}, r-i {worst['ri']:.3f}, "
              f"i-z {worst['iz']:.3f}; {int(comp['within'].sum()) if n_cells else 0} cells within")
    if n_cells:
        detail += (f"; median d(u-g) {float(np.median(comp['dug'])):+.3f}, matched to the simulated stars' "
                   f"g-r and [Fe/H] {float(np.median(comp['dug_matched'])):+.3f}")
    metrics = {"n_cells": float(n_cells), "n_feh_bins": float(n_feh),
               **{f"max_abs_d{c}": v for c, v in worst.items()}}
    if n_cells:
        metrics["median_dug_matched"] = float(np.median(comp["dug_matched"]))
    return Check("dwarf_locus", sample, worst["ug"], target, passed, detail, table, metrics)


def principal_colour(mags: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A principal colour (``w`` or ``y``) and whether each star lies in its defining range.

    Parameters
    ----------
    mags : pandas.DataFrame
        Dereddened magnitudes ``u, g, r, i, z``.

    Returns
    -------
    value, in_range : numpy.ndarray
    """
    spec = PRINCIPAL_COLOURS[name]
    m = np.column_stack([mags[b].to_numpy(float) for b in BANDS] + [np.ones(len(mags))])
    value = m @ np.asarray(spec["coef"])
    p1 = m @ np.asarray(spec["p1"])
    lo, hi = spec["p1_range"]
    return value, (p1 > lo) & (p1 < hi) & np.isfinite(value)


def locus_width(sim: pd.DataFrame, real: pd.DataFrame, *, sample: str,
                tolerance: float = WIDTH_TOLERANCE, min_stars: int = MIN_WIDTH_STARS) -> Check:
    """Robust width (1.4826 MAD) of the principal colours w and y, simulated vs real.

    Both samples are cut to the r range they share (from the larger of their 1st percentiles to
    the smaller of their 99th).

    Parameters
    ----------
    sim, real : pandas.DataFrame
        Dereddened magnitudes ``u, g, r, i, z``.

    Returns
    -------
    Check
        Value: the ratio (simulated / real) farthest from 1.
    """
    lo, hi = common_range(sim["r"].to_numpy(float), real["r"].to_numpy(float))
    rows = []
    for name in PRINCIPAL_COLOURS:
        row = {"colour": name, "r_lo": lo, "r_hi": hi}
        for side, df in (("sim", sim), ("real", real)):
            v, ok = principal_colour(df, name)
            ok &= (df["r"].to_numpy(float) >= lo) & (df["r"].to_numpy(float) <= hi)
            row[f"n_{side}"] = int(ok.sum())
            row[f"width_{side}"] = robust_sigma(v[ok])
        row["ratio"] = row["width_sim"] / row["width_real"] if row["width_real"] > 0 else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    usable = (table["n_sim"] >= min_stars) & (table["n_real"] >= min_stars)
    table["usable"] = usable
    ratios = table.loc[usable, "ratio"].to_numpy(float)
    value = float(ratios[np.argmax(np.abs(np.log(ratios)))]) if ratios.size else float("nan")
    within = bool((np.abs(ratios - 1.0) <= tolerance).all())
    passed = (within if usable.all() else None) if within else False
    detail = "; ".join(
        f"{r.colour}: {r.width_sim:.4f} vs {r.width_real:.4f} mag (x{r.ratio:.2f}; {r.n_sim} / {r.n_real} stars)"
        for r in table.itertuples()) + f"; common r range {lo:.2f}-{hi:.2f}"
    if not usable.all():
        detail += f" (fewer than {min_stars} stars of a sample there: not judged)"
        # for orientation: each sample's own bright stars, where photometric errors stay small
        own = []
        for side, df in (("simulated", sim), ("real", real)):
            bright = df[df["r"].to_numpy(float) <= BRIGHT_R]
            widths = ", ".join(f"{name} {robust_sigma(v[ok]):.4f} ({int(ok.sum())})"
                               for name in PRINCIPAL_COLOURS for v, ok in [principal_colour(bright, name)])
            own.append(f"{side} r <= {BRIGHT_R:g}: {widths}")
        detail += "; own ranges, " + "; ".join(own)
    target = (f"w and y widths within +-{tolerance:.0%} of calibObj's (>= {min_stars} stars each, "
              "same r range)")
    metrics = {f"ratio_{r.colour}": float(r.ratio) for r in table.itertuples()}
    return Check("locus_width", sample, value, target, passed, detail, table, metrics)
