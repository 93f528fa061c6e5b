"""Tabular features for the baselines: extinction-corrected magnitudes and the 10 colours.

The paper (section 4.4) compares its image model with tree models on two feature sets built from
SDSS PSF magnitudes corrected for Galactic extinction:

- ``mag``: the five magnitudes ``u0, g0, r0, i0, z0`` (``psfmag_<b> - extinction_<b>``);
- ``color``: the ten colours ``[u-g, u-r, u-i, u-z, g-r, g-i, g-z, r-i, r-z, i-z]`` of those
  magnitudes, in the paper's order (every band pair, bluer band first).

The input is a star table with the dataset file's column names (``psfmag_<b>``,
``extinction_<b>``); a table that carries colours directly may instead hold columns named like
the colour features (``u-g``, ...), which are then used as given.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stellarexp.sdss import BANDS

FEATURE_SETS: tuple[str, ...] = ("mag", "color")

MAG_FEATURES: tuple[str, ...] = tuple(f"{b}0" for b in BANDS)
"""Names of the extinction-corrected magnitude features (``u0`` ... ``z0``)."""

COLOR_PAIRS: tuple[tuple[str, str], ...] = (
    ("u", "g"), ("u", "r"), ("u", "i"), ("u", "z"),
    ("g", "r"), ("g", "i"), ("g", "z"),
    ("r", "i"), ("r", "z"),
    ("i", "z"),
)
"""Band pairs of the paper's colour vector, in its order."""

COLOR_FEATURES: tuple[str, ...] = tuple(f"{a}-{b}" for a, b in COLOR_PAIRS)
"""Names of the colour features (``u-g`` ... ``i-z``)."""


def feature_names(kind: str) -> tuple[str, ...]:
    """Return the feature names of feature set ``kind`` (``mag`` or ``color``)."""
    if kind == "mag":
        return MAG_FEATURES
    if kind == "color":
        return COLOR_FEATURES
    raise ValueError(f"unknown feature set {kind!r}; choose one of {FEATURE_SETS}")


def corrected_magnitudes(stars: pd.DataFrame) -> pd.DataFrame:
    """Extinction-corrected PSF magnitudes ``psfmag_<b> - extinction_<b>``.

    Parameters
    ----------
    stars : pandas.DataFrame
        Star table with ``psfmag_<b>`` columns; ``extinction_<b>`` columns are subtracted when
        present (a missing extinction column means the magnitude is already corrected).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`MAG_FEATURES`, same index as ``stars``.
    """
    missing = [f"psfmag_{b}" for b in BANDS if f"psfmag_{b}" not in stars]
    if missing:
        raise KeyError(
            f"the star table lacks magnitude columns {missing}; the 'mag' features (and colours "
            "not given directly) need psfmag_u..psfmag_z"
        )
    out = {}
    for b, name in zip(BANDS, MAG_FEATURES):
        mag = pd.to_numeric(stars[f"psfmag_{b}"], errors="coerce").astype(float)
        ext_col = f"extinction_{b}"
        if ext_col in stars:
            mag = mag - pd.to_numeric(stars[ext_col], errors="coerce").astype(float)
        out[name] = mag
    return pd.DataFrame(out, index=stars.index)


def colors(stars: pd.DataFrame) -> pd.DataFrame:
    """The ten colours in the paper's order.

    Colours present as columns (``u-g`` ...) are used as given, so a table that only has
    colours works; otherwise they are differences of :func:`corrected_magnitudes`.
    """
    if all(c in stars for c in COLOR_FEATURES):
        return pd.DataFrame(
            {c: pd.to_numeric(stars[c], errors="coerce").astype(float) for c in COLOR_FEATURES},
            index=stars.index,
        )
    mags = corrected_magnitudes(stars)
    return pd.DataFrame(
        {f"{a}-{b}": mags[f"{a}0"] - mags[f"{b}0"] for a, b in COLOR_PAIRS}, index=stars.index
    )


def features(stars: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Feature matrix of feature set ``kind`` (``mag`` or ``color``) for every star.

    Parameters
    ----------
    stars : pandas.DataFrame
        Star table (dataset-file column names).
    kind : {"mag", "color"}

    Returns
    -------
    pandas.DataFrame
        float columns :func:`feature_names` ``(kind)``; non-finite where an input is missing.
    """
    feature_names(kind)  # validates kind
    frame = corrected_magnitudes(stars) if kind == "mag" else colors(stars)
    return frame.replace([np.inf, -np.inf], np.nan)
