"""What every realism comparison returns, and the colours they compare."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import median_abs_deviation

from stellarexp import sdss

COLOURS: tuple[str, ...] = ("ug", "gr", "ri", "iz")
"""Adjacent SDSS colours, named as in the SSPP table (u-g, g-r, r-i, i-z)."""


@dataclass
class Check:
    """One comparison of the survey against a real anchor.

    Attributes
    ----------
    name : str
        What is compared, e.g. ``dwarf_locus``.
    sample : str
        Which simulated sample (``quick``, ``segue-like``, ...).
    value : float
        The headline figure (NaN when the comparison could not be made).
    target : str
        What passing means, in words.
    passed : bool or None
        None when there were too few stars to judge.
    detail : str
        One line on how the value came about.
    table : pandas.DataFrame, optional
        Per-cell / per-band numbers behind the value.
    metrics : dict
        Extra named figures for MLflow (``<name>`` -> float).
    """

    name: str
    sample: str
    value: float
    target: str
    passed: bool | None
    detail: str = ""
    table: pd.DataFrame | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL`` or ``n/a``."""
        return "n/a" if self.passed is None else ("pass" if self.passed else "FAIL")


def dereddened_colours(stars: pd.DataFrame, mag: str = "psfmag_{b}", ext: str = "extinction_{b}") -> pd.DataFrame:
    """Adjacent colours ``ug, gr, ri, iz`` corrected with each star's own extinction.

    Parameters
    ----------
    stars : pandas.DataFrame
        Magnitudes and extinctions per band (column patterns ``mag`` and ``ext``).

    Returns
    -------
    pandas.DataFrame
        Same index as ``stars``.
    """
    m0 = {b: stars[mag.format(b=b)].to_numpy(float) - stars[ext.format(b=b)].to_numpy(float)
          for b in sdss.BANDS}
    pairs = zip(sdss.BANDS[:-1], sdss.BANDS[1:])
    return pd.DataFrame({f"{a}{b}": m0[a] - m0[b] for a, b in pairs}, index=stars.index)


def robust_sigma(x) -> float:
    """1.4826 x MAD of the finite values (scipy's normal-scaled median absolute deviation)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(median_abs_deviation(x, scale="normal")) if x.size else float("nan")
