"""Cross-match photometry with APOGEE labels, drop duplicates, apply the paper's cuts.

Input 1 is a CasJobs-style cross-match table (the result of the Appendix-D query of Wu et al.
2023, or the synthetic survey's ``crossmatch.csv``); input 2 an APOGEE allStar-like label file.
:func:`select_stars` returns the selected star table in the schema of ``docs/architecture.md``,
the funnel (count after each step) and a rejects table with one row per dropped entry.

Funnel steps, in order (see ``docs/pipeline.md`` for why this order):

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

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stellarexp import sdss
from stellarexp.constants import LABELS
from stellarexp.data.units import PLAUSIBLE, PLAUSIBLE_PHOTOMETRY, implausible_rows

# Typical APOGEE DR17 label errors; used to put the three errors on one scale when ranking
# duplicated entries without an SNR column.
TYPICAL_LABEL_ERR = {"teff": 100.0, "logg": 0.1, "fe_h": 0.05}
FLAG_NAMES = {"SATURATED": sdss.FLAG_SATURATED, "INTERP": sdss.FLAG_INTERP,
              "DEBLEND_TOO_MANY_PEAKS": sdss.FLAG_DEBLEND_TOO_MANY_PEAKS}
SENTINEL_BELOW = -9990.0  # APOGEE/SDSS use -9999 (and -999x variants) for "not measured"


class CatalogError(ValueError):
    """A catalogue file is unreadable, lacks a column, or the selection is empty."""


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
    rejects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["star_id", "reason", "detail"]))
    label_free: bool = False


# canonical name -> accepted spellings (compared case-insensitively)
CROSS_COLUMNS: dict[str, tuple[str, ...]] = {
    "run": ("run",), "camcol": ("camcol",), "field": ("field",),
    "obj_id": ("objID", "obj_id", "objid"),
    "photoobj_ra": ("photoobj_ra", "ra"), "photoobj_dec": ("photoobj_dec", "dec"),
    "apstar_id": ("apstar_id",), "star_ra": ("star_ra",), "star_dec": ("star_dec",), "teff_casjobs": ("teff",),
}
for _b in sdss.BANDS:
    CROSS_COLUMNS[f"flags_{_b}"] = (f"flags_{_b}",)
    CROSS_COLUMNS[f"psfmag_{_b}"] = (f"psfMag_{_b}",)
    CROSS_COLUMNS[f"psfmagerr_{_b}"] = (f"psfMagErr_{_b}",)
    CROSS_COLUMNS[f"extinction_{_b}"] = (f"extinction_{_b}",)
CROSS_REQUIRED = (["run", "camcol", "field", "obj_id", "photoobj_ra", "photoobj_dec"]
                  + [f"{k}_{b}" for k in ("flags", "psfmag", "psfmagerr", "extinction") for b in sdss.BANDS])

LABEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "apogee_id": ("APOGEE_ID",), "apstar_id": ("APSTAR_ID",), "ra": ("RA",), "dec": ("DEC",),
    "teff": ("TEFF",), "logg": ("LOGG",), "fe_h": ("FE_H",),
    "teff_err": ("TEFF_ERR",), "logg_err": ("LOGG_ERR",), "fe_h_err": ("FE_H_ERR",),
    "fe_h_flag": ("FE_H_FLAG",), "snr": ("SNR",),
}
LABEL_REQUIRED = ["ra", "dec", "teff", "logg", "fe_h", "teff_err", "logg_err", "fe_h_err", "fe_h_flag"]


def read_table(path) -> pd.DataFrame:
    """Read a CSV, FITS (first table HDU) or Parquet table into a DataFrame.

    Multidimensional FITS columns are dropped (they cannot live in a flat table); byte strings
    are decoded and stripped.

    Raises
    ------
    CatalogError
        Naming the file if it is missing, of an unknown type or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{path}: file not found")
    name = path.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz", ".txt")):
            df = pd.read_csv(path)
        elif name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        elif name.endswith((".fits", ".fit", ".fits.gz", ".fit.gz", ".fts")):
            from astropy.table import Table

            tab = Table.read(path, format="fits")
            flat = [c for c in tab.colnames if tab[c].ndim <= 1]
            df = tab[flat].to_pandas()
        else:
            raise CatalogError(f"{path}: unknown table type; use .csv, .fits or .parquet")
    except CatalogError:
        raise
    except Exception as exc:
        raise CatalogError(f"{path}: cannot read table ({type(exc).__name__}: {exc})") from exc
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].map(lambda v: v.decode() if isinstance(v, bytes) else v)
            if df[col].map(lambda v: isinstance(v, str)).all():
                df[col] = df[col].str.strip()
    return df


def _canonicalise(df: pd.DataFrame, spec: dict[str, tuple[str, ...]], required, source: str) -> pd.DataFrame:
    """Rename columns of ``df`` to canonical names (case-insensitive); check ``required``."""
    lower = {c.lower(): c for c in df.columns}
    rename, missing = {}, []
    for canon, spellings in spec.items():
        hit = next((lower[s.lower()] for s in spellings if s.lower() in lower), None)
        if hit is not None:
            rename[hit] = canon
        elif canon in required:
            missing.append((canon, spellings[0]))
    if missing:
        msgs = []
        for canon, expected in missing:
            close = difflib.get_close_matches(expected.lower(), list(lower), n=2, cutoff=0.6)
            hint = f" (closest present: {', '.join(lower[c] for c in close)})" if close else ""
            msgs.append(f"{expected}{hint}")
        raise CatalogError(f"{source}: missing required column(s) {', '.join(msgs)}; "
                           f"present columns: {', '.join(map(str, df.columns))}. Names are case-insensitive.")
    return df.rename(columns=rename)[list(rename.values())]


def read_crossmatch(source, *, require_apstar: bool = False) -> pd.DataFrame:
    """Read a CasJobs cross-match table with canonical lower-case column names.

    Parameters
    ----------
    source : path-like or pandas.DataFrame
        The table (CSV/FITS/Parquet) or an already loaded DataFrame.
    require_apstar : bool
        Also require ``apstar_id`` (needed to join labels).

    Returns
    -------
    pandas.DataFrame
        Columns ``run, camcol, field, obj_id, photoobj_ra, photoobj_dec, flags_<b>, psfmag_<b>,
        psfmagerr_<b>, extinction_<b>`` and, when present, ``apstar_id, star_ra, star_dec``.
    """
    name = "cross-match DataFrame" if isinstance(source, pd.DataFrame) else str(source)
    df = source.copy() if isinstance(source, pd.DataFrame) else read_table(source)
    required = CROSS_REQUIRED + (["apstar_id"] if require_apstar else [])
    df = _canonicalise(df, CROSS_COLUMNS, required, f"{name} (CasJobs cross-match table)")
    for col in ("run", "camcol", "field", "obj_id") + tuple(f"flags_{b}" for b in sdss.BANDS):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(-1).astype(np.int64)
    if "apstar_id" in df:
        df["apstar_id"] = df["apstar_id"].astype(str).str.strip().replace({"nan": "", "None": "", "<NA>": ""})
    return df.reset_index(drop=True)


def read_labels(source) -> pd.DataFrame:
    """Read an APOGEE allStar-like label file with canonical lower-case column names.

    ``APSTAR_ID`` is optional (coordinates are then the only join key); ``SNR`` is optional and
    used to rank duplicated entries.
    """
    name = "label DataFrame" if isinstance(source, pd.DataFrame) else str(source)
    df = source.copy() if isinstance(source, pd.DataFrame) else read_table(source)
    df = _canonicalise(df, LABEL_COLUMNS, LABEL_REQUIRED, f"{name} (APOGEE allStar label file)")
    for col in ("apogee_id", "apstar_id"):
        if col in df:
            df[col] = df[col].astype(str).str.strip().replace({"nan": "", "None": "", "<NA>": ""})
    for col in LABEL_REQUIRED + (["snr"] if "snr" in df else []):
        if col != "fe_h_flag":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["fe_h_flag"] = pd.to_numeric(df["fe_h_flag"], errors="coerce")
    from stellarexp.data.units import check_label_units  # Teff in kK or log10: stop here

    check_label_units({k: df[k] for k in LABELS}, f"{name} (APOGEE allStar label file)",
                      {"teff": "TEFF", "logg": "LOGG", "fe_h": "FE_H"}, error=CatalogError)
    return df.reset_index(drop=True)


def _is_missing(values) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return ~np.isfinite(v) | (v <= SENTINEL_BELOW)


def _reject(rows: pd.DataFrame, reason: str, detail) -> pd.DataFrame:
    ids = rows["star_id"] if "star_id" in rows else rows["obj_id"].astype(str)
    detail = list(detail) if not isinstance(detail, str) else [detail] * len(rows)
    return pd.DataFrame({"star_id": ids.astype(str).to_numpy(), "reason": reason, "detail": detail})


def _flag_detail(flags: np.ndarray) -> list[str]:
    out = []
    for row in flags:
        parts = []
        for name, bit in FLAG_NAMES.items():
            bands = [b for b, f in zip(sdss.BANDS, row) if int(f) & bit]
            if bands:
                parts.append(f"{name}({','.join(bands)})")
        out.append("; ".join(parts))
    return out


def _match_labels(cross: pd.DataFrame, labels: pd.DataFrame, radius_arcsec: float) -> pd.DataFrame:
    """Attach label rows to cross-match rows: APSTAR_ID first, nearest position as fallback.

    Returns the merged rows (one per matched cross row, possibly several cross rows per label),
    with ``match_method`` and ``match_sep_arcsec``.
    """
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
    if not len(cross):
        return np.zeros(0)
    ra1 = np.radians(cross["photoobj_ra"].to_numpy(float))
    de1 = np.radians(cross["photoobj_dec"].to_numpy(float))
    ra2 = np.radians(lab["lab_ra"].to_numpy(float))
    de2 = np.radians(lab["lab_dec"].to_numpy(float))
    hav = np.sin((de2 - de1) / 2) ** 2 + np.cos(de1) * np.cos(de2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(hav, 0, 1)))) * 3600.0


def _rank_score(df: pd.DataFrame) -> np.ndarray:
    """Lower is better: -SNR when an SNR column exists, else summed normalised label errors."""
    err = np.zeros(len(df))
    for lab in LABELS:
        col = f"lab_{lab}_err"
        if col in df:
            e = np.abs(df[col].to_numpy(float))
            e = np.where(_is_missing(df[col]), 1e6, e)
            err += e / TYPICAL_LABEL_ERR[lab]
    if "lab_snr" in df and np.isfinite(df["lab_snr"].to_numpy(float)).any():
        snr = np.nan_to_num(df["lab_snr"].to_numpy(float), nan=-1.0)
        # SNR first; the error sum breaks ties
        return -snr * 1e6 + err
    return err


def select_stars(crossmatch, labels=None, *, match_radius_arcsec: float = 1.0,
                 cut_flags: int = sdss.PAPER_CUT_FLAGS, require_fe_h_flag_zero: bool = True) -> Selection:
    """Join, de-duplicate and cut: the catalogue arrow of the pipeline.

    Parameters
    ----------
    crossmatch : path-like or pandas.DataFrame
        CasJobs-style cross-match table (see :func:`read_crossmatch`).
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

    flags = cross[[f"flags_{b}" for b in sdss.BANDS]].to_numpy(np.int64)
    bad = (flags & int(cut_flags)) != 0
    badrow = bad.any(axis=1)
    rejects.append(_reject(cross[badrow], "photo_flags", _flag_detail(flags[badrow] & int(cut_flags))))
    cross = cross[~badrow].reset_index(drop=True)
    funnel.append(("photometric flags clean", len(cross)))

    phot_cols = [f"{k}_{b}" for k in ("psfmag", "psfmagerr", "extinction") for b in sdss.BANDS]
    miss = np.column_stack([_is_missing(pd.to_numeric(cross[c], errors="coerce")) for c in phot_cols]) if len(cross) \
        else np.zeros((0, len(phot_cols)), bool)
    missrow = miss.any(axis=1)
    detail = [", ".join(c for c, m in zip(phot_cols, row) if m) for row in miss[missrow]]
    rejects.append(_reject(cross[missrow], "missing_photometry", detail))
    cross = cross[~missrow].reset_index(drop=True)
    for c in phot_cols:
        cross[c] = cross[c].astype(float)
    funnel.append(("photometry present", len(cross)))
    odd, detail = implausible_rows({c: cross[c] for c in phot_cols},
                                   {c: PLAUSIBLE_PHOTOMETRY[c.rsplit("_", 1)[0]] for c in phot_cols})
    rejects.append(_reject(cross[odd], "implausible_photometry", detail))
    cross = cross[~odd].reset_index(drop=True)
    funnel.append(("photometry plausible", len(cross)))

    if label_free:
        stars = cross.copy()
        for lab in LABELS:
            stars[lab] = np.nan
            stars[f"{lab}_err"] = np.nan
        stars["apogee_id"] = ""
        if "apstar_id" not in stars:
            stars["apstar_id"] = ""
        dup = stars["obj_id"].duplicated(keep="first")
        rejects.append(_reject(stars[dup], "duplicate", "same objID listed again; first row kept"))
        stars = stars[~dup].reset_index(drop=True)
        funnel.append(("duplicates removed", len(stars)))
    else:
        if "apstar_id" not in cross and "star_ra" not in cross:
            raise CatalogError(f"{crossmatch}: the cross-match table has neither apstar_id nor star_ra/star_dec; "
                               "cannot join labels (or run label-free with labels=null)")
        lab = read_labels(labels)
        merged, unmatched = _match_labels(cross, lab, match_radius_arcsec)
        rejects.append(_reject(unmatched, "no_label_match",
                               f"no APSTAR_ID match and no label entry within {match_radius_arcsec} arcsec"))
        merged["star_id"] = np.where(merged["lab_apstar_id"].astype(str).str.len() > 0,
                                     merged["lab_apstar_id"].astype(str), merged["obj_id"].astype(str)) \
            if "lab_apstar_id" in merged else merged["obj_id"].astype(str)
        funnel.append(("matched to labels", len(merged)))

        if require_fe_h_flag_zero:
            fl = pd.to_numeric(merged["lab_fe_h_flag"], errors="coerce")
            badfl = (fl.fillna(1) != 0).to_numpy()
            rejects.append(_reject(merged[badfl], "fe_h_flag", [f"FE_H_FLAG={v}" for v in merged.loc[badfl, "lab_fe_h_flag"]]))
            merged = merged[~badfl].reset_index(drop=True)
            funnel.append(("FE_H_FLAG == 0", len(merged)))

        lmiss = np.column_stack([_is_missing(merged[f"lab_{c}"]) for c in LABELS]) if len(merged) \
            else np.zeros((0, 3), bool)
        lrow = lmiss.any(axis=1)
        detail = [", ".join(f"{c}={merged[f'lab_{c}'].iloc[i]}" for c, m in zip(LABELS, lmiss[i]) if m)
                  for i in np.flatnonzero(lrow)]
        rejects.append(_reject(merged[lrow], "missing_label", detail))
        merged = merged[~lrow].reset_index(drop=True)
        funnel.append(("labels present", len(merged)))
        # a few rows in other units (Teff in kK) pass the file's median check: reject them
        odd, detail = implausible_rows({c: merged[f"lab_{c}"] for c in LABELS}, PLAUSIBLE)
        rejects.append(_reject(merged[odd], "implausible_label", detail))
        merged = merged[~odd].reset_index(drop=True)
        funnel.append(("labels plausible", len(merged)))

        # duplicates: the same photometric object matched by several APOGEE entries, or one
        # APOGEE entry matched to several objects; keep the best-ranked row of each group
        score = _rank_score(merged)
        sep = np.nan_to_num(merged["match_sep_arcsec"].to_numpy(float), nan=99.0)
        order = np.lexsort((sep, score))
        merged = merged.iloc[order].reset_index(drop=True)
        dup_obj = merged["obj_id"].duplicated(keep="first")
        dup_star = merged["star_id"].duplicated(keep="first") & ~dup_obj
        keep_obj = merged[~dup_obj].set_index("obj_id")["star_id"]
        rejects.append(_reject(merged[dup_obj], "duplicate",
                               [f"objID {o} kept as {keep_obj[o]}" for o in merged.loc[dup_obj, "obj_id"]]))
        rejects.append(_reject(merged[dup_star], "duplicate", "APOGEE entry already matched to another object"))
        merged = merged[~(dup_obj | dup_star)].reset_index(drop=True)
        funnel.append(("duplicates removed", len(merged)))

        stars = merged
        for c in LABELS:
            stars[c] = stars[f"lab_{c}"].astype(float)
            err = stars[f"lab_{c}_err"].astype(float)
            stars[f"{c}_err"] = np.where(_is_missing(err), np.nan, err)
        stars["apogee_id"] = stars["lab_apogee_id"].astype(str) if "lab_apogee_id" in stars else ""
        stars["apstar_id"] = stars["lab_apstar_id"].astype(str) if "lab_apstar_id" in stars else \
            stars.get("apstar_id", "")
        stars = stars.sort_values(["run", "camcol", "field", "obj_id"], kind="stable").reset_index(drop=True)

    rejects_df = pd.concat([r for r in rejects if len(r)], ignore_index=True) if any(len(r) for r in rejects) \
        else pd.DataFrame(columns=["star_id", "reason", "detail"])
    if len(stars) == 0:
        steps = " -> ".join(f"{s} {n}" for s, n in funnel)
        reasons = rejects_df["reason"].value_counts().to_dict() if len(rejects_df) else {}
        raise CatalogError(f"no star survives the catalogue cuts ({steps}); reject reasons {reasons}; "
                           "check the cross-match/label files or loosen the cuts")
    return Selection(stars=_to_schema(stars), funnel=funnel, rejects=rejects_df, label_free=label_free)


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
    return out.reset_index(drop=True)
