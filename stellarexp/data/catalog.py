"""Select the catalogue's stars: cross-match photometry with APOGEE labels, cut, de-duplicate.

Input 1 is a CasJobs-style cross-match table (the result of the Appendix-D query of Wu et al.
2023, or the synthetic survey's ``crossmatch.csv``); input 2 an APOGEE allStar-like label file.
:func:`select_stars` returns the selected star table in the schema of ``docs/architecture.md``,
the funnel (count after each step) and a rejects table with one row per dropped entry.

The steps live beside this module: reading the files (:mod:`.catalog_files`), the label join
(:mod:`.label_match`), the cuts (:mod:`.catalog_cuts`) and the duplicates
(:mod:`.catalog_duplicates`). Funnel steps, in order (see ``docs/pipeline.md`` for why this
order):

1. ``cross-match rows``: rows read.
2. ``photometric flags clean``: no SATURATED, INTERP or DEBLEND_TOO_MANY_PEAKS in any band.
3. ``photometry present``: psfMag, psfMagErr and extinction finite and not a -9999 sentinel.
4. ``photometry plausible``: psfMag within 5-35 mag, its error and the extinction within 0-10 mag
   (:data:`stellarexp.data.units.PLAUSIBLE_PHOTOMETRY`).
5. ``matched to labels``: APSTAR_ID join, else nearest label entry within ``match_radius_arcsec``.
6. ``FE_H_FLAG == 0``.
7. ``labels present``: Teff, logg, [Fe/H] finite and not sentinels.
8. ``labels plausible``: every row's labels within :data:`stellarexp.data.units.PLAUSIBLE`
   (a few rows in other units, e.g. Teff in kK, are rejected as ``implausible_label``).
9. ``duplicates removed``: one row per photometric object and per APOGEE star (best entry kept).

Label-free mode (no label file) runs steps 1-4 and 9 (by objID) only; labels are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stellarexp import sdss
from stellarexp.constants import LABELS
from stellarexp.data import gaia_parallax
from stellarexp.data.catalog_cuts import (
    drop_fe_h_flagged,
    drop_flagged_photometry,
    drop_implausible_labels,
    drop_implausible_photometry,
    drop_missing_labels,
    drop_missing_photometry,
)
from stellarexp.data.catalog_duplicates import drop_duplicate_matches, drop_repeated_objects
from stellarexp.data.catalog_files import CatalogError, is_missing, read_crossmatch, read_labels
from stellarexp.data.catalog_rejects import concat_rejects, empty_rejects, reject_rows
from stellarexp.data.gaia_parallax import GAIA_COLUMNS
from stellarexp.data.label_match import match_labels


@dataclass
class Selection:
    """Result of :func:`select_stars`.

    Attributes
    ----------
    stars : pandas.DataFrame
        Selected stars, one row each, columns of the dataset star table.
    funnel : list of (str, int)
        Count after each step.
    rejects : pandas.DataFrame
        ``star_id``, ``reason``, ``detail`` for every dropped row.
    label_free : bool
        True when no label file was given.
    """

    stars: pd.DataFrame
    funnel: list[tuple[str, int]]
    rejects: pd.DataFrame = field(default_factory=empty_rejects)
    label_free: bool = False


def select_stars(crossmatch, labels=None, *, match_radius_arcsec: float = 1.0,
                 cut_flags: int = sdss.PAPER_CUT_FLAGS, require_fe_h_flag_zero: bool = True) -> Selection:
    """Join, de-duplicate and cut: the catalogue arrow of the pipeline.

    Parameters
    ----------
    crossmatch : path-like or pandas.DataFrame
        CasJobs-style cross-match table (see
        :func:`stellarexp.data.catalog_files.read_crossmatch`).
    labels : path-like, pandas.DataFrame or None
        APOGEE allStar-like label file; None selects the label-free mode.
    match_radius_arcsec : float
        Radius of the coordinate fallback join.
    cut_flags : int
        photoObj flag bits rejected in any band (default: the Appendix-D bits).
    require_fe_h_flag_zero : bool
        Reject label rows with ``FE_H_FLAG != 0``.

    Returns
    -------
    Selection

    Raises
    ------
    CatalogError
        A file or column is missing, or no star survives (the message carries the funnel).
    """
    label_free = labels is None
    cross = read_crossmatch(crossmatch, require_apstar=False)
    cross["star_id"] = cross["obj_id"].astype(str)
    funnel: list[tuple[str, int]] = [("cross-match rows", len(cross))]
    rejects = []

    cross, rejected = drop_flagged_photometry(cross, cut_flags)
    rejects.append(rejected)
    funnel.append(("photometric flags clean", len(cross)))
    cross, rejected = drop_missing_photometry(cross)
    rejects.append(rejected)
    funnel.append(("photometry present", len(cross)))
    cross, rejected = drop_implausible_photometry(cross)
    rejects.append(rejected)
    funnel.append(("photometry plausible", len(cross)))
    cross = gaia_parallax.correct(cross)  # Gaia DR3 columns, when the table has them

    if label_free:
        stars = cross.copy()
        for lab in LABELS:
            stars[lab] = np.nan
            stars[f"{lab}_err"] = np.nan
        stars["apogee_id"] = ""
        if "apstar_id" not in stars:
            stars["apstar_id"] = ""
        stars, rejected = drop_repeated_objects(stars)
        rejects.append(rejected)
        funnel.append(("duplicates removed", len(stars)))
    else:
        if "apstar_id" not in cross and "star_ra" not in cross:
            raise CatalogError(f"{crossmatch}: the cross-match table has neither apstar_id nor star_ra/star_dec; "
                               "cannot join labels (or run label-free with labels=null)")
        lab = read_labels(labels)
        merged, unmatched = match_labels(cross, lab, match_radius_arcsec)
        rejects.append(reject_rows(unmatched, "no_label_match",
                                   f"no APSTAR_ID match and no label entry within {match_radius_arcsec} arcsec"))
        merged["star_id"] = np.where(merged["lab_apstar_id"].astype(str).str.len() > 0,
                                     merged["lab_apstar_id"].astype(str), merged["obj_id"].astype(str)) \
            if "lab_apstar_id" in merged else merged["obj_id"].astype(str)
        funnel.append(("matched to labels", len(merged)))

        if require_fe_h_flag_zero:
            merged, rejected = drop_fe_h_flagged(merged)
            rejects.append(rejected)
            funnel.append(("FE_H_FLAG == 0", len(merged)))
        merged, rejected = drop_missing_labels(merged)
        rejects.append(rejected)
        funnel.append(("labels present", len(merged)))
        merged, rejected = drop_implausible_labels(merged)
        rejects.append(rejected)
        funnel.append(("labels plausible", len(merged)))
        merged, rejected = drop_duplicate_matches(merged)
        rejects.append(rejected)
        funnel.append(("duplicates removed", len(merged)))
        stars = _labelled_stars(merged)

    rejects_df = concat_rejects(rejects)
    if len(stars) == 0:
        steps = " -> ".join(f"{s} {n}" for s, n in funnel)
        reasons = rejects_df["reason"].value_counts().to_dict() if len(rejects_df) else {}
        raise CatalogError(f"no star survives the catalogue cuts ({steps}); reject reasons {reasons}; "
                           "check the cross-match/label files or loosen the cuts")
    return Selection(stars=_to_schema(stars), funnel=funnel, rejects=rejects_df, label_free=label_free)


def _labelled_stars(merged: pd.DataFrame) -> pd.DataFrame:
    """The matched rows with the label columns of the star table, in field order."""
    stars = merged
    for c in LABELS:
        stars[c] = stars[f"lab_{c}"].astype(float)
        err = stars[f"lab_{c}_err"].astype(float)
        stars[f"{c}_err"] = np.where(is_missing(err), np.nan, err)
    stars["apogee_id"] = stars["lab_apogee_id"].astype(str) if "lab_apogee_id" in stars else ""
    stars["apstar_id"] = stars["lab_apstar_id"].astype(str) if "lab_apstar_id" in stars else \
        stars.get("apstar_id", "")
    return stars.sort_values(["run", "camcol", "field", "obj_id"], kind="stable").reset_index(drop=True)


def _to_schema(df: pd.DataFrame) -> pd.DataFrame:
    """Keep and order the dataset star-table columns (architecture.md)."""
    out = pd.DataFrame({
        "star_id": df["star_id"].astype(str),
        "apogee_id": df["apogee_id"].astype(str) if "apogee_id" in df else "",
        "apstar_id": df["apstar_id"].astype(str) if "apstar_id" in df else "",
        "obj_id": df["obj_id"].astype(np.int64),
        "run": df["run"].astype(int), "camcol": df["camcol"].astype(int), "field": df["field"].astype(int),
        "ra": df["photoobj_ra"].astype(float), "dec": df["photoobj_dec"].astype(float),
    })
    for c in LABELS:
        out[c] = df[c].astype(float)
    for c in LABELS:
        out[f"{c}_err"] = df[f"{c}_err"].astype(float)
    for k in ("psfmag", "psfmagerr", "extinction"):
        for b in sdss.BANDS:
            out[f"{k}_{b}"] = df[f"{k}_{b}"].astype(float)
    for c in (*GAIA_COLUMNS, "parallax_zero_point", "parallax_corrected"):
        if c in df:
            out[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    if "parallax_zp_applied" in df:
        out["parallax_zp_applied"] = df["parallax_zp_applied"].astype(bool)
    return out.reset_index(drop=True)
