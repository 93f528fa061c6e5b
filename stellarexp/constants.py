"""Facts every layer shares, defined once: the labels, the bands, the paper's dwarf/giant split
the normal-consistent MAD factor and the scored interval levels.

The SDSS instrument facts (gains, flags, file names, ...) live in :mod:`stellarexp.sdss`, which
re-exports :data:`BANDS`.
"""

from __future__ import annotations

LABELS: tuple[str, ...] = ("teff", "logg", "fe_h")
"""The three stellar labels, in the order of every table and model output."""

BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z")
"""SDSS's five bands, in wavelength order (the order of image channels and catalogue columns)."""

LOGG_THRESHOLD = 4.0
"""dex: the paper's split between its two logg groups (dwarfs above, giants below; Eq. 20)."""

MAD_TO_SIGMA = 1.4826
"""The median absolute deviation of a normal sample times this is its sigma: the conventional
four digits of 1 / Phi^-1(3/4) = 1.482602... (every robust sigma of the project uses it)."""

INTERVAL_LEVELS: dict[float, str] = {0.68: "68", 0.95: "95"}
"""The central intervals every uncertainty is scored at, with the tag of their metric and column
names (``coverage68``, ``lo95``, ...)."""

PAPER_HEAD_METHOD = "bbb"
"""The paper's uncertainty method of the head (Bayes-by-Backprop): ``stage.method``'s default,
Table 2's "ours" row, and the method of heads saved before the choice existed."""
