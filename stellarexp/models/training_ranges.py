"""What a package records of its training stars, and the out-of-distribution flag it gives.

:func:`training_ranges` is stored in ``package.json`` when a package is assembled: the ranges of
the labels, the 10 dereddened colours and the observed r magnitude, and the training stars'
standardised colours with a density threshold. :func:`ood` flags a star whose predicted label,
colour or magnitude lies outside those ranges, or whose colours sit where training stars are
sparse: its score is the mean distance to its ``k`` nearest training stars in standardised
colour space over the same distance's 99th percentile among the training stars themselves
(each against the others), so about 1% of training stars score above 1 by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import median_abs_deviation
from sklearn.neighbors import NearestNeighbors

from stellarexp.constants import BANDS, MAD_TO_SIGMA
from stellarexp.data.features import colors
from stellarexp.models.package_format import PackageError

NEIGHBOURS = 10  # k of the colour-space score
# a colour is out of range only when it lies beyond the training range by more than this many
# of its own measurement errors: a star 0.002 mag bluer in u-g than the bluest training star,
# with a u-g error of 0.03, is consistent with the training range and is not flagged
RANGE_TOLERANCE_SIGMA = 2.0
DENSITY_QUANTILE = 0.99  # of the training stars' own scores: the flag's threshold
# the magnitude checked: the band the catalogue cuts select on; the other bands' magnitudes are
# r plus colours, which the colour ranges and the density score already judge
MAGNITUDE_BANDS = ("r",)


def training_ranges(stars: pd.DataFrame, targets: Sequence[str]) -> dict:
    """Min/max of each label, of the 10 dereddened colours and of the observed magnitudes of
    :data:`MAGNITUDE_BANDS` over ``stars`` (finite values), and their colour space
    (:func:`colour_space`).

    Parameters
    ----------
    stars : pandas.DataFrame
        The training stars (dataset star-table columns).
    targets : sequence of str

    Returns
    -------
    dict
        ``{"labels": {t: [lo, hi]}, "colours": {"u-g": [lo, hi], ...}, "magnitudes": {"r":
        [lo, hi]}, "colour_space": {...}}`` (the last two when ``stars`` has photometry).
    """
    out: dict = {"labels": {}, "colours": {}}
    for t in targets:
        v = pd.to_numeric(stars[t], errors="coerce").to_numpy(float) if t in stars else np.array([])
        v = v[np.isfinite(v)]
        if v.size:
            out["labels"][t] = [float(v.min()), float(v.max())]
    if all(f"psfmag_{b}" in stars for b in BANDS):
        col = colors(stars)
        for name in col.columns:
            v = col[name].to_numpy(float)
            v = v[np.isfinite(v)]
            if v.size:
                out["colours"][name] = [float(v.min()), float(v.max())]
        out["magnitudes"] = {}
        for b in MAGNITUDE_BANDS:
            v = pd.to_numeric(stars[f"psfmag_{b}"], errors="coerce").to_numpy(float)
            v = v[np.isfinite(v)]
            if v.size:
                out["magnitudes"][b] = [float(v.min()), float(v.max())]
        space = colour_space(col)
        if space:
            out["colour_space"] = space
    return out


def colour_space(col: pd.DataFrame, k: int = NEIGHBOURS) -> dict:
    """The training stars in standardised colour space and the density score's threshold.

    Colours are centred on their median and scaled by their robust spread (1.4826 MAD), so no
    one colour dominates the distance. A training star's score is its mean distance to its ``k``
    nearest other training stars; the threshold is the :data:`DENSITY_QUANTILE` of those.

    Returns
    -------
    dict
        ``columns``, ``centre``, ``scale``, ``points`` (standardised, 4 decimals), ``k``,
        ``threshold``, ``quantile``; empty with fewer than ``k + 2`` complete stars.
    """
    x = col.to_numpy(float)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < k + 2:
        return {}
    centre = np.median(x, axis=0)
    scale = MAD_TO_SIGMA * median_abs_deviation(x, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = np.round((x - centre) / scale, 4)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    own = dist[:, 1:].mean(axis=1)  # the nearest is the star itself
    return {"columns": list(col.columns), "centre": centre.tolist(), "scale": scale.tolist(),
            "points": z.tolist(), "k": int(k), "quantile": DENSITY_QUANTILE,
            "threshold": float(np.quantile(own, DENSITY_QUANTILE))}


def colour_index(space: dict) -> NearestNeighbors:
    """The training stars of a :func:`colour_space` as a fitted neighbour index (fit it once
    per package, not per batch of stars)."""
    return NearestNeighbors(n_neighbors=int(space["k"])).fit(np.asarray(space["points"]))


def colour_score(colours: pd.DataFrame, space: dict,
                 index: NearestNeighbors | None = None) -> np.ndarray:
    """Each star's colour-space score (:func:`colour_space`; above 1: sparser than 99% of the
    training stars' surroundings); NaN without all the colours. ``index``: the space's
    :func:`colour_index`, built here when not given."""
    x = colours.reindex(columns=space["columns"]).to_numpy(float)
    score = np.full(len(x), np.nan)
    ok = np.isfinite(x).all(axis=1)
    if ok.any():
        z = (x[ok] - np.asarray(space["centre"])) / np.asarray(space["scale"])
        dist, _ = (index or colour_index(space)).kneighbors(z)
        score[ok] = dist.mean(axis=1) / float(space["threshold"])
    return score


def star_colours(stars: pd.DataFrame) -> pd.DataFrame | None:
    """The 10 dereddened colours of ``stars``, their observed magnitudes in
    :data:`MAGNITUDE_BANDS` (``mag_<b>``) and, with ``psfmagerr_<b>`` columns, each colour's
    measurement error (``err_<colour>``, the two bands' errors in quadrature); ``None`` without
    ``psfmag_<b>`` columns."""
    if not all(f"psfmag_{b}" in stars for b in BANDS):
        return None
    out = colors(stars)
    if all(f"psfmagerr_{b}" in stars for b in BANDS):
        err = {b: pd.to_numeric(stars[f"psfmagerr_{b}"], errors="coerce").to_numpy(float)
               for b in BANDS}
        for name in list(out.columns):
            a, b = name.split("-")
            out[f"err_{name}"] = np.hypot(err[a], err[b])
    for b in MAGNITUDE_BANDS:
        out[f"mag_{b}"] = pd.to_numeric(stars[f"psfmag_{b}"], errors="coerce").astype(float)
    return out.reset_index(drop=True)


def ood(mean: Mapping[str, np.ndarray], ranges: dict, colours: pd.DataFrame | None = None,
        index: NearestNeighbors | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Flag stars out of the training distribution, with a score and the reasons.

    Parameters
    ----------
    mean : mapping of str to numpy.ndarray ``[N]``
        Predicted mean of each label.
    ranges : dict
        What the package recorded (:func:`training_ranges`).
    colours : pandas.DataFrame, optional
        The same stars' colours and magnitudes (:func:`star_colours`), ``N`` rows. A colour is
        out of range when it lies beyond it by more than :data:`RANGE_TOLERANCE_SIGMA` times
        its ``err_<colour>`` (exactly beyond it without that column).
    index : sklearn.neighbors.NearestNeighbors, optional
        :func:`colour_index` of ``ranges["colour_space"]`` (built per call when not given).

    Returns
    -------
    flag : numpy.ndarray of bool ``[N]``
    score : numpy.ndarray ``[N]``
        The colour-space score (:func:`colour_score`; NaN without colours or a package that
        predates it).
    reasons : list of str
        Per star, what is out (``"teff>max; u-g<min; r>max; colour density 1.8"``), empty when
        nothing is.
    """
    n = len(next(iter(mean.values())))
    reasons: list[list[str]] = [[] for _ in range(n)]
    score = np.full(n, np.nan)

    def check(name, values, bounds, tolerance=0.0):
        lo, hi = bounds
        values = np.asarray(values, float)
        tolerance = np.nan_to_num(np.asarray(tolerance, float), nan=0.0)
        for i in np.flatnonzero(values < lo - tolerance):
            reasons[i].append(f"{name}<min")
        for i in np.flatnonzero(values > hi + tolerance):
            reasons[i].append(f"{name}>max")

    for t, bounds in (ranges.get("labels") or {}).items():
        if t in mean:
            check(t, mean[t], bounds)
    if colours is not None:
        if len(colours) != n:
            raise PackageError(f"{len(colours)} colour rows for {n} images")
        for c, bounds in (ranges.get("colours") or {}).items():
            if c in colours:
                err = colours[f"err_{c}"].to_numpy(float) if f"err_{c}" in colours else 0.0
                check(c, colours[c].to_numpy(float), bounds, RANGE_TOLERANCE_SIGMA * err)
        for b, bounds in (ranges.get("magnitudes") or {}).items():
            if f"mag_{b}" in colours:
                check(b, colours[f"mag_{b}"].to_numpy(float), bounds)
        if ranges.get("colour_space"):
            score = colour_score(colours, ranges["colour_space"], index)
            for i in np.flatnonzero(score > 1.0):
                reasons[i].append(f"colour density {score[i]:.2f}")
    text = ["; ".join(r) for r in reasons]
    return np.array([bool(r) for r in reasons], dtype=bool), score, text
