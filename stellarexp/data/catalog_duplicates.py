"""Duplicates of the catalogue: keep one row per photometric object and per APOGEE star.

A photometric object matched by several APOGEE entries, or one APOGEE entry matched to several
objects, keeps its best-ranked row (:func:`rank_score`, then the smaller match separation).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stellarexp.constants import LABELS
from stellarexp.data.catalog_files import is_missing
from stellarexp.data.catalog_rejects import concat_rejects, reject_rows

# Typical APOGEE DR17 label errors; used to put the three errors on one scale when ranking
# duplicated entries without an SNR column.
TYPICAL_LABEL_ERR = {"teff": 100.0, "logg": 0.1, "fe_h": 0.05}


def rank_score(df: pd.DataFrame) -> np.ndarray:
    """Lower is better: -SNR when an SNR column exists, else summed normalised label errors.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows matched to labels (``lab_<label>_err``, optionally ``lab_snr``).

    Returns
    -------
    numpy.ndarray
        One score per row.
    """
    err = np.zeros(len(df))
    for lab in LABELS:
        col = f"lab_{lab}_err"
        if col in df:
            e = np.abs(df[col].to_numpy(float))
            e = np.where(is_missing(df[col]), 1e6, e)
            err += e / TYPICAL_LABEL_ERR[lab]
    if "lab_snr" in df and np.isfinite(df["lab_snr"].to_numpy(float)).any():
        snr = np.nan_to_num(df["lab_snr"].to_numpy(float), nan=-1.0)
        # SNR first; the error sum breaks ties
        return -snr * 1e6 + err
    return err


def drop_repeated_objects(stars: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Label-free mode: keep the first row of each ``obj_id``.

    Returns
    -------
    kept, rejected : pandas.DataFrame
        Rejected as ``duplicate``.
    """
    dup = stars["obj_id"].duplicated(keep="first")
    rejected = reject_rows(stars[dup], "duplicate", "same objID listed again; first row kept")
    return stars[~dup].reset_index(drop=True), rejected


def drop_duplicate_matches(merged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the best-ranked row of each photometric object, then of each APOGEE star.

    Parameters
    ----------
    merged : pandas.DataFrame
        Rows matched to labels, with ``obj_id``, ``star_id`` and ``match_sep_arcsec``.

    Returns
    -------
    kept : pandas.DataFrame
        One row per object and per star, in rank order.
    rejected : pandas.DataFrame
        Rejected as ``duplicate``: repeated objects first, then repeated APOGEE entries.
    """
    score = rank_score(merged)
    sep = np.nan_to_num(merged["match_sep_arcsec"].to_numpy(float), nan=99.0)
    order = np.lexsort((sep, score))
    merged = merged.iloc[order].reset_index(drop=True)
    dup_obj = merged["obj_id"].duplicated(keep="first")
    dup_star = merged["star_id"].duplicated(keep="first") & ~dup_obj
    keep_obj = merged[~dup_obj].set_index("obj_id")["star_id"]
    rejected = concat_rejects([
        reject_rows(merged[dup_obj], "duplicate",
                    [f"objID {o} kept as {keep_obj[o]}" for o in merged.loc[dup_obj, "obj_id"]]),
        reject_rows(merged[dup_star], "duplicate", "APOGEE entry already matched to another object")])
    return merged[~(dup_obj | dup_star)].reset_index(drop=True), rejected
