"""The training ranges a package records, and the out-of-range flag they give a prediction.

:func:`training_ranges` is stored in ``package.json`` when a package is assembled;
:func:`out_of_range` flags stars whose predicted labels or input colours fall outside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from stellarexp.constants import BANDS
from stellarexp.data.features import colors
from stellarexp.models.package_format import PackageError


def training_ranges(stars: pd.DataFrame, targets: Sequence[str]) -> dict:
    """Min/max of each label and of the 10 dereddened colours over ``stars`` (finite values).

    Parameters
    ----------
    stars : pandas.DataFrame
        The training stars (dataset star-table columns).
    targets : sequence of str

    Returns
    -------
    dict
        ``{"labels": {t: [lo, hi]}, "colours": {"u-g": [lo, hi], ...}}``.
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
    return out


def star_colours(stars: pd.DataFrame) -> pd.DataFrame | None:
    """The 10 dereddened colours of ``stars``, or ``None`` without ``psfmag_<b>`` columns."""
    if not all(f"psfmag_{b}" in stars for b in BANDS):
        return None
    return colors(stars).reset_index(drop=True)


def out_of_range(mean: Mapping[str, np.ndarray], ranges: dict,
                 colours: pd.DataFrame | None = None) -> tuple[np.ndarray, list[str]]:
    """Flag stars whose predicted mean or input colour lies outside the training range.

    Parameters
    ----------
    mean : mapping of str to numpy.ndarray ``[N]``
        Predicted mean of each label.
    ranges : dict
        Training ranges (:func:`training_ranges`).
    colours : pandas.DataFrame, optional
        The 10 dereddened colours of the same stars (:func:`star_colours`), ``N`` rows.

    Returns
    -------
    flag : numpy.ndarray of bool ``[N]``
    detail : list of str
        Per star, the offending quantities (``"teff>max; u-g<min"``), empty when in range.
    """
    n = len(next(iter(mean.values())))
    reasons: list[list[str]] = [[] for _ in range(n)]

    def check(name, values, bounds):
        lo, hi = bounds
        values = np.asarray(values, float)
        for i in np.flatnonzero(values < lo):
            reasons[i].append(f"{name}<min")
        for i in np.flatnonzero(values > hi):
            reasons[i].append(f"{name}>max")

    for t, bounds in (ranges.get("labels") or {}).items():
        if t in mean:
            check(t, mean[t], bounds)
    if colours is not None:
        if len(colours) != n:
            raise PackageError(f"{len(colours)} colour rows for {n} images")
        for c, bounds in (ranges.get("colours") or {}).items():
            if c in colours:
                check(c, colours[c].to_numpy(float), bounds)
    detail = ["; ".join(r) for r in reasons]
    return np.array([bool(r) for r in reasons]), detail
