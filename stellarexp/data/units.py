"""Label units: Teff in K, logg and [Fe/H] in dex. A label column in other units is refused.

A label file with Teff in kK or as log10(Teff) reads without error and trains without error;
only the results are nonsense. :func:`check_label_units` looks at the median of each label
column and stops with the file, the column, what the values look like and how to convert them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# label -> (low, high, unit) of the median of a real sample, and of every single row
PLAUSIBLE = {"teff": (2000.0, 60000.0, "K"), "logg": (-1.5, 6.5, "dex (log10 of g in cgs)"),
             "fe_h": (-5.5, 1.5, "dex")}
# catalogue photometry of a row: (low, high) of psfMag (mag), its error (mag), extinction (mag)
PLAUSIBLE_PHOTOMETRY = {"psfmag": (5.0, 35.0), "psfmagerr": (0.0, 10.0), "extinction": (0.0, 10.0)}


def _guess(label: str, v: np.ndarray) -> tuple[str, str]:
    """(what the values ``v`` look like, how to convert them)."""
    median = float(np.median(v))
    if label == "teff":
        # log10 of 2000-60000 K spans 3.3-4.8 with a small spread; kK values spread more
        if 3.2 <= v.min() and v.max() <= 4.8 and np.std(v) < 0.2:
            return "log10(Teff)", "10**value"
        if 2.0 <= median <= 60.0:
            return "Teff in kK", "1000 * value"
    if label == "logg" and median > 10:
        return "g in cm s^-2 rather than log g", "log10(value)"
    if label == "fe_h" and 0.0 < median <= 0.1:
        return "a metal mass fraction Z rather than [Fe/H]", "log10(value / 0.0134)"
    return "another unit", "convert the column"


def _row_hint(label: str, v: float) -> str:
    """What one implausible value looks like (one value cannot tell kK from log10 at 3.2-4.8)."""
    if label == "teff" and 2.0 <= v <= 60.0:
        return "Teff in kK or log10(Teff)" if 3.2 <= v <= 4.8 else "Teff in kK"
    return _guess(label, np.array([v]))[0]


def implausible_rows(values: Mapping[str, np.ndarray], ranges: Mapping[str, tuple]) -> tuple[np.ndarray, list[str]]:
    """Rows with a value outside its plausible range, and for each a detail naming the values.

    A file where most rows are fine but a few are in other units (Teff in kK for some stars)
    passes :func:`check_label_units`; these rows are rejected with this detail instead of being
    kept as they are.

    Parameters
    ----------
    values : mapping
        Column name -> values of equal length (NaN counts as plausible: missing values have
        their own reject reason).
    ranges : mapping
        Column name -> ``(low, high, ...)``; columns without a range are not checked.

    Returns
    -------
    mask : numpy.ndarray of bool
    details : list of str
        One per flagged row, e.g. ``teff=4.81 outside [2000, 60000] K (Teff in kK?)``.
    """
    names = [c for c in values if c in ranges]
    n = len(next(iter(values.values()))) if values else 0
    bad = np.zeros((n, len(names)), bool)
    for j, c in enumerate(names):
        v = np.asarray(values[c], dtype=float)
        low, high = ranges[c][0], ranges[c][1]
        bad[:, j] = np.isfinite(v) & ((v < low) | (v > high))
    mask = bad.any(axis=1) if names else np.zeros(n, bool)
    details = []
    for i in np.flatnonzero(mask):
        parts = []
        for j, c in enumerate(names):
            if bad[i, j]:
                v = float(np.asarray(values[c], dtype=float)[i])
                low, high = ranges[c][0], ranges[c][1]
                unit = ranges[c][2] if len(ranges[c]) > 2 else ""
                hint = f" ({_row_hint(c, v)}?)" if c in PLAUSIBLE else ""
                parts.append(f"{c}={v:.4g} outside [{low:g}, {high:g}] {unit}".rstrip() + hint)
        details.append("; ".join(parts))
    return mask, details


def check_label_units(values: Mapping[str, np.ndarray], source: str,
                      columns: Mapping[str, str] | None = None, error=ValueError) -> None:
    """Raise ``error`` when a label's median lies outside its plausible range.

    Parameters
    ----------
    values : mapping
        Label name (``teff``, ``logg``, ``fe_h``) -> values (NaN and sentinels ignored).
    source : str
        The file the labels come from (named in the message).
    columns : mapping, optional
        Label -> the column name in that file (named in the message).
    error : type
        Exception class raised (the caller's own error type).
    """
    columns = dict(columns or {})
    for label, data in values.items():
        if label not in PLAUSIBLE:
            continue
        v = np.asarray(data, dtype=float)
        v = v[np.isfinite(v) & (v > -9990.0)]
        if not len(v):
            continue
        low, high, unit = PLAUSIBLE[label]
        median = float(np.median(v))
        if low <= median <= high:
            continue
        looks, fix = _guess(label, v)
        col = columns.get(label, label)
        raise error(f"{source}: column {col!r} ({label}) has median {median:.4g}, outside "
                    f"[{low:g}, {high:g}] {unit}; it looks like {looks}. Convert it to {unit} "
                    f"({fix}) in the file and rerun")
