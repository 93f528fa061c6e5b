"""The paper's Appendix-D cuts: each drops rows of the catalogue and says why.

Every cut takes the current rows and returns ``(kept, rejected)``: the surviving rows (index
reset) and their rejects-table rows (:mod:`stellarexp.data.catalog_rejects`). The photometric
cuts run on cross-match rows, the label cuts on rows already matched to labels (``lab_``
columns). :func:`stellarexp.data.catalog.select_stars` runs them in the funnel's order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stellarexp import sdss
from stellarexp.constants import LABELS
from stellarexp.data.catalog_files import is_missing
from stellarexp.data.catalog_rejects import reject_rows
from stellarexp.data.units import PLAUSIBLE, PLAUSIBLE_PHOTOMETRY, implausible_rows

FLAG_NAMES = {"SATURATED": sdss.FLAG_SATURATED, "INTERP": sdss.FLAG_INTERP,
              "DEBLEND_TOO_MANY_PEAKS": sdss.FLAG_DEBLEND_TOO_MANY_PEAKS}
PHOT_COLUMNS = [f"{k}_{b}" for k in ("psfmag", "psfmagerr", "extinction") for b in sdss.BANDS]


def _flag_detail(flags: np.ndarray) -> list[str]:
    """Per row, the named flags set and their bands (``"SATURATED(u,g); INTERP(z)"``)."""
    out = []
    for row in flags:
        parts = []
        for name, bit in FLAG_NAMES.items():
            bands = [b for b, f in zip(sdss.BANDS, row) if int(f) & bit]
            if bands:
                parts.append(f"{name}({','.join(bands)})")
        out.append("; ".join(parts))
    return out


def drop_flagged_photometry(cross: pd.DataFrame, cut_flags: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop rows with any of the ``cut_flags`` photoObj bits set in any band.

    Parameters
    ----------
    cross : pandas.DataFrame
        Cross-match rows with ``flags_<b>`` columns.
    cut_flags : int
        The rejected flag bits.

    Returns
    -------
    kept, rejected : pandas.DataFrame
        Rejected as ``photo_flags``, the detail naming the flags and bands.
    """
    flags = cross[[f"flags_{b}" for b in sdss.BANDS]].to_numpy(np.int64)
    bad = (flags & int(cut_flags)) != 0
    badrow = bad.any(axis=1)
    rejected = reject_rows(cross[badrow], "photo_flags", _flag_detail(flags[badrow] & int(cut_flags)))
    return cross[~badrow].reset_index(drop=True), rejected


def drop_missing_photometry(cross: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop rows whose psfMag, psfMagErr or extinction is not finite or a -9999 sentinel.

    Parameters
    ----------
    cross : pandas.DataFrame
        Cross-match rows with the :data:`PHOT_COLUMNS`.

    Returns
    -------
    kept, rejected : pandas.DataFrame
        ``kept`` with the :data:`PHOT_COLUMNS` as float; rejected as ``missing_photometry``.
    """
    miss = np.column_stack([is_missing(pd.to_numeric(cross[c], errors="coerce")) for c in PHOT_COLUMNS]) \
        if len(cross) else np.zeros((0, len(PHOT_COLUMNS)), bool)
    missrow = miss.any(axis=1)
    detail = [", ".join(c for c, m in zip(PHOT_COLUMNS, row) if m) for row in miss[missrow]]
    rejected = reject_rows(cross[missrow], "missing_photometry", detail)
    cross = cross[~missrow].reset_index(drop=True)
    for c in PHOT_COLUMNS:
        cross[c] = cross[c].astype(float)
    return cross, rejected


def drop_implausible_photometry(cross: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop rows whose photometry lies outside :data:`stellarexp.data.units.PLAUSIBLE_PHOTOMETRY`.

    Returns
    -------
    kept, rejected : pandas.DataFrame
        Rejected as ``implausible_photometry``.
    """
    odd, detail = implausible_rows({c: cross[c] for c in PHOT_COLUMNS},
                                   {c: PLAUSIBLE_PHOTOMETRY[c.rsplit("_", 1)[0]] for c in PHOT_COLUMNS})
    rejected = reject_rows(cross[odd], "implausible_photometry", detail)
    return cross[~odd].reset_index(drop=True), rejected


def drop_fe_h_flagged(merged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop matched rows with ``FE_H_FLAG != 0`` (a missing flag counts as set).

    Returns
    -------
    kept, rejected : pandas.DataFrame
        Rejected as ``fe_h_flag``.
    """
    fl = pd.to_numeric(merged["lab_fe_h_flag"], errors="coerce")
    badfl = (fl.fillna(1) != 0).to_numpy()
    rejected = reject_rows(merged[badfl], "fe_h_flag", [f"FE_H_FLAG={v}" for v in merged.loc[badfl, "lab_fe_h_flag"]])
    return merged[~badfl].reset_index(drop=True), rejected


def drop_missing_labels(merged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop matched rows whose Teff, logg or [Fe/H] is not finite or a sentinel.

    Returns
    -------
    kept, rejected : pandas.DataFrame
        Rejected as ``missing_label``.
    """
    lmiss = np.column_stack([is_missing(merged[f"lab_{c}"]) for c in LABELS]) if len(merged) \
        else np.zeros((0, 3), bool)
    lrow = lmiss.any(axis=1)
    detail = [", ".join(f"{c}={merged[f'lab_{c}'].iloc[i]}" for c, m in zip(LABELS, lmiss[i]) if m)
              for i in np.flatnonzero(lrow)]
    rejected = reject_rows(merged[lrow], "missing_label", detail)
    return merged[~lrow].reset_index(drop=True), rejected


def drop_implausible_labels(merged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop matched rows whose labels lie outside :data:`stellarexp.data.units.PLAUSIBLE`.

    A few rows in other units (Teff in kK) pass the label file's median check: this rejects them.

    Returns
    -------
    kept, rejected : pandas.DataFrame
        Rejected as ``implausible_label``.
    """
    odd, detail = implausible_rows({c: merged[f"lab_{c}"] for c in LABELS}, PLAUSIBLE)
    rejected = reject_rows(merged[odd], "implausible_label", detail)
    return merged[~odd].reset_index(drop=True), rejected
