"""Tabular features for the baselines: extinction-corrected magnitudes and the 10 colours.

The paper (section 4.4) compares its image model with tree models on two feature sets built from
SDSS PSF magnitudes corrected for Galactic extinction:

- ``mag``: the five magnitudes ``u0, g0, r0, i0, z0`` (``psfmag_<b> - extinction_<b>``);
- ``color``: the ten colours ``[u-g, u-r, u-i, u-z, g-r, g-i, g-z, r-i, r-z, i-z]`` of those
  magnitudes, in the paper's order (every band pair, bluer band first).

Beyond the paper, ``color_parallax`` adds a Gaia parallax as the pseudo-luminosity
``parallax x 10^(0.2 r0) / 100`` and its error (:func:`stellarexp.data.gaia_parallax.
pseudo_luminosity`; the zero-point-corrected parallax when the table has it; never its inverse).

The input is a star table with the dataset file's column names (``psfmag_<b>``,
``extinction_<b>``); a table that carries colours directly may instead hold columns named like
the colour features (``u-g``, ...), which are then used as given. :func:`complete_colors` forms
the ten from any set of colours that links the five bands (the four adjacent ones, say).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from itertools import pairwise

import numpy as np
import pandas as pd

from stellarexp.data.gaia_parallax import pseudo_luminosity
from stellarexp.sdss import BANDS

FEATURE_SETS: tuple[str, ...] = ("mag", "color", "color_parallax")

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

PARALLAX_FEATURES: tuple[str, ...] = ("plx_lum_r", "plx_lum_r_err")
"""The parallax features: the pseudo-luminosity in r and its error."""

ADJACENT_COLORS: tuple[str, ...] = tuple(f"{a}-{b}" for a, b in pairwise(BANDS))
"""The four colours of neighbouring bands (``u-g``, ``g-r``, ``r-i``, ``i-z``): they determine
the other six."""


def feature_names(kind: str) -> tuple[str, ...]:
    """Return the feature names of feature set ``kind`` (``mag`` or ``color``)."""
    if kind == "mag":
        return MAG_FEATURES
    if kind == "color":
        return COLOR_FEATURES
    if kind == "color_parallax":
        return COLOR_FEATURES + PARALLAX_FEATURES
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
    if kind == "color_parallax":
        frame = pd.concat([frame, parallax_features(stars)], axis=1)
    return frame.replace([np.inf, -np.inf], np.nan)


SIDE_INPUTS: tuple[str, ...] = ("parallax", "colors")
"""Tabular side inputs the image heads may take beside the backbone features
(``model.side_inputs``): the parallax features and the ten colours."""


def side_input_frame(stars: pd.DataFrame, kinds) -> pd.DataFrame:
    """The side inputs ``kinds`` (:data:`SIDE_INPUTS`) of every star, raw (unscaled)."""
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in SIDE_INPUTS]
    if unknown:
        raise ValueError(f"model.side_inputs {unknown}: choose from {list(SIDE_INPUTS)}")
    parts = [parallax_features(stars) if k == "parallax" else colors(stars) for k in kinds]
    frame = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=stars.index)
    return frame.replace([np.inf, -np.inf], np.nan)


def parallax_features(stars: pd.DataFrame) -> pd.DataFrame:
    """:data:`PARALLAX_FEATURES` of every star: the pseudo-luminosity of the (zero-point
    corrected) parallax in the dereddened r band and its error; 0 and a huge error where a star
    has no parallax."""
    col = "parallax_corrected" if "parallax_corrected" in stars else "parallax"
    if col not in stars:
        raise KeyError("the 'color_parallax' features need a parallax column (parallax, "
                       "parallax_error: a cross-match with Gaia DR3; docs/parallax.md)")
    if "parallax_error" not in stars:
        raise KeyError("the 'color_parallax' features need parallax_error beside the parallax")
    r0 = corrected_magnitudes(stars)["r0"].to_numpy(float)
    value, error = pseudo_luminosity(pd.to_numeric(stars[col], errors="coerce").to_numpy(float),
                                     pd.to_numeric(stars["parallax_error"], errors="coerce").to_numpy(float), r0)
    return pd.DataFrame(dict(zip(PARALLAX_FEATURES, (value, error))), index=stars.index)


def _color_path(a: str, b: str, given) -> list[tuple[str, float]] | None:
    """Shortest chain of given colours from band ``a`` to ``b``: ``[(colour, sign), ...]`` whose
    signed sum is ``m_a - m_b``; ``None`` when the given colours do not link the two bands."""
    steps: dict[str, list[tuple[str, str, float]]] = {band: [] for band in BANDS}
    for colour in given:
        x, y = colour.split("-")
        steps[x].append((y, colour, 1.0))  # m_x - m_y = +colour
        steps[y].append((x, colour, -1.0))
    came: dict[str, tuple[str, str, float] | None] = {a: None}
    queue = deque([a])
    while queue:
        band = queue.popleft()
        for nxt, colour, sign in steps[band]:
            if nxt not in came:
                came[nxt] = (band, colour, sign)
                queue.append(nxt)
    if b not in came:
        return None
    path, band = [], b
    while came[band] is not None:
        prev, colour, sign = came[band]
        path.append((colour, sign))
        band = prev
    return path[::-1]


def _linked_groups(given) -> list[list[str]]:
    """The bands in groups linked by the given colours, in band order."""
    groups: list[list[str]] = []
    for band in BANDS:
        for group in groups:
            if _color_path(group[0], band, given) is not None:
                group.append(band)
                break
        else:
            groups.append([band])
    return groups


def complete_colors(given: Mapping[str, np.ndarray], errors: Mapping[str, np.ndarray] | None = None,
                    band_errors: Mapping[str, np.ndarray] | None = None, *,
                    source: str = "colours") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The ten colours (and their errors) from any colours that link the five bands.

    A colour not given is the signed sum of the given colours along the shortest chain between
    its bands, e.g. ``u-i = (u-g) + (g-r) + (r-i)``: exact, since every colour is a difference of
    the same magnitudes. A star missing one link gets NaN for the colours through it.

    Errors, per colour, from the first source that has them:

    1. the colour's own error column (``errors``), for a colour given directly;
    2. the magnitude errors (``band_errors``): ``hypot(err_a, err_b)``, exact for independent
       band errors;
    3. the quadrature sum of the chain's colour errors: an upper bound, since neighbouring colours
       share a band with opposite signs (``var(u-r) = var(u-g) + var(g-r) - 2 var(g)``) and
       colour errors alone do not determine the band errors;

    else NaN.

    Parameters
    ----------
    given : mapping
        Colour name (``u-g`` ..., bluer band first; :data:`COLOR_FEATURES`) -> values.
    errors : mapping, optional
        Colour name -> its 1-sigma error, for colours in ``given``.
    band_errors : mapping, optional
        Band (``u`` ... ``z``) -> magnitude error, for all five bands.
    source : str
        What the colours came from, named in errors (e.g. ``data.columns.colors``).

    Returns
    -------
    colours : dict
        :data:`COLOR_FEATURES` -> float arrays.
    colour_errors : dict
        :data:`COLOR_FEATURES` -> float arrays; empty when neither ``errors`` nor ``band_errors``
        is given.

    Raises
    ------
    ValueError
        When a colour is unknown or the given colours leave bands unlinked (naming the colours
        that cannot be formed and the adjacent colours that would link them).
    """
    unknown = [c for c in given if c not in COLOR_FEATURES]
    if unknown:
        raise ValueError(f"{source}: unknown colours {unknown}; colours are named bluer band "
                         f"first: {list(COLOR_FEATURES)}")
    errors = dict(errors or {})
    stray = [c for c in errors if c not in given]
    if stray:
        raise ValueError(f"{source}: errors given for colours {stray} that are not given; "
                         f"the colours are {list(given)}")
    paths = {c: _color_path(*c.split("-"), given) for c in COLOR_FEATURES}
    cannot = [c for c, p in paths.items() if p is None]
    if cannot:
        groups = _linked_groups(given)
        group_of = {band: i for i, group in enumerate(groups) for band in group}
        links = [c for c in ADJACENT_COLORS if group_of[c[0]] != group_of[c[-1]]]
        raise ValueError(
            f"{source} gives {list(given)}, which cannot form colours {cannot}: the bands "
            f"{' | '.join(''.join(g) for g in groups)} are not linked. Add the colours {links} "
            f"(the four adjacent colours {list(ADJACENT_COLORS)} determine all ten)"
        )
    values = {c: np.asarray(v, dtype=float) for c, v in given.items()}
    out, out_err = {}, {}
    for colour, path in paths.items():
        out[colour] = (values[colour] if colour in values
                       else sum(sign * values[c] for c, sign in path))
        a, b = colour.split("-")
        if colour in errors:
            out_err[colour] = np.asarray(errors[colour], dtype=float)
        elif band_errors is not None:
            out_err[colour] = np.hypot(np.asarray(band_errors[a], float),
                                       np.asarray(band_errors[b], float))
        elif errors:
            if all(c in errors for c, _ in path):
                out_err[colour] = np.sqrt(sum(np.asarray(errors[c], float) ** 2 for c, _ in path))
            else:
                out_err[colour] = np.full(len(out[colour]), np.nan)
    return out, out_err
