"""Attach APOGEE label rows to cross-match rows: APSTAR_ID join first, nearest position within
a radius as the fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd


def match_labels(cross: pd.DataFrame, labels: pd.DataFrame,
                 radius_arcsec: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attach label rows to cross-match rows: APSTAR_ID first, nearest position as fallback.

    Parameters
    ----------
    cross : pandas.DataFrame
        Cross-match rows (:func:`stellarexp.data.catalog_files.read_crossmatch`).
    labels : pandas.DataFrame
        Label rows (:func:`stellarexp.data.catalog_files.read_labels`).
    radius_arcsec : float
        Largest separation of the coordinate fallback.

    Returns
    -------
    matched : pandas.DataFrame
        One row per matched cross row (possibly several cross rows per label): the cross
        columns, ``match_method``, ``match_sep_arcsec`` and the label columns prefixed ``lab_``.
    unmatched : pandas.DataFrame
        The cross rows without a label, with ``match_method`` and ``match_sep_arcsec``.
    """
    # astropy.coordinates takes about half a second to import: only when labels are joined
    import astropy.units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    lab = labels.reset_index(drop=True).add_prefix("lab_")
    cross = cross.reset_index(drop=True)
    lab_idx = np.full(len(cross), -1, dtype=np.int64)
    method = np.array([""] * len(cross), dtype=object)
    if "apstar_id" in cross and "lab_apstar_id" in lab:
        first = pd.Series(np.arange(len(lab)), index=lab["lab_apstar_id"].to_numpy())
        first = first[~first.index.duplicated(keep="first") & (first.index != "")]  # "" = no id
        hit = cross["apstar_id"].map(first)
        ok = hit.notna().to_numpy()
        lab_idx[ok] = hit[ok].astype(np.int64).to_numpy()
        method[ok] = "apstar_id"
    todo = np.flatnonzero(lab_idx < 0)
    sep = np.full(len(cross), np.nan)
    if len(todo) and len(lab):
        ra = cross["star_ra"] if "star_ra" in cross else cross["photoobj_ra"]
        dec = cross["star_dec"] if "star_dec" in cross else cross["photoobj_dec"]
        ra, dec = ra.to_numpy(float)[todo], dec.to_numpy(float)[todo]
        # rows without APOGEE coordinates fall back to the photometric position
        bad = ~np.isfinite(ra) | ~np.isfinite(dec)
        ra[bad] = cross["photoobj_ra"].to_numpy(float)[todo][bad]
        dec[bad] = cross["photoobj_dec"].to_numpy(float)[todo][bad]
        good_lab = np.isfinite(lab["lab_ra"].to_numpy(float)) & np.isfinite(lab["lab_dec"].to_numpy(float))
        if good_lab.any():
            cat = SkyCoord(lab["lab_ra"].to_numpy(float)[good_lab] * u.deg, lab["lab_dec"].to_numpy(float)[good_lab] * u.deg)
            fin = np.isfinite(ra) & np.isfinite(dec)
            if fin.any():
                idx, d2d, _ = match_coordinates_sky(SkyCoord(ra[fin] * u.deg, dec[fin] * u.deg), cat)
                d = d2d.to_value(u.arcsec)
                close = d <= radius_arcsec
                rows = todo[fin][close]
                lab_idx[rows] = np.flatnonzero(good_lab)[idx[close]]
                method[rows] = "coords"
                sep[rows] = d[close]
    if "apstar_id" in cross and "lab_apstar_id" in lab:
        exact = method == "apstar_id"
        sep[exact] = _sep_arcsec(cross.loc[exact], lab.iloc[lab_idx[exact]])
    out = cross.copy()
    out["match_method"] = method
    out["match_sep_arcsec"] = sep
    out["_lab"] = lab_idx
    matched = out[lab_idx >= 0].reset_index(drop=True)
    labs = lab.iloc[matched["_lab"].to_numpy()].reset_index(drop=True)
    return pd.concat([matched.drop(columns="_lab"), labs], axis=1), out[lab_idx < 0].drop(columns="_lab")


def _sep_arcsec(cross: pd.DataFrame, lab: pd.DataFrame) -> np.ndarray:
    """Angular separation (haversine) of each photometric position from its label's."""
    if not len(cross):
        return np.zeros(0)
    ra1 = np.radians(cross["photoobj_ra"].to_numpy(float))
    de1 = np.radians(cross["photoobj_dec"].to_numpy(float))
    ra2 = np.radians(lab["lab_ra"].to_numpy(float))
    de2 = np.radians(lab["lab_dec"].to_numpy(float))
    hav = np.sin((de2 - de1) / 2) ** 2 + np.cos(de1) * np.cos(de2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(hav, 0, 1)))) * 3600.0
