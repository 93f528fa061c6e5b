"""Read the catalogue inputs (CasJobs cross-match table, APOGEE allStar label file) with
canonical lower-case column names, and recognise their "not measured" values.

Column names are matched case-insensitively against the accepted spellings below; a missing
required column raises :class:`CatalogError` naming the closest columns present.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pandas as pd

from stellarexp import sdss
from stellarexp.constants import LABELS
from stellarexp.data.units import check_label_units

SENTINEL_BELOW = -9990.0  # APOGEE/SDSS use -9999 (and -999x variants) for "not measured"


class CatalogError(ValueError):
    """A catalogue file is unreadable, lacks a column, or the selection is empty."""


# canonical name -> accepted spellings (compared case-insensitively)
CROSS_COLUMNS: dict[str, tuple[str, ...]] = {
    "run": ("run",), "camcol": ("camcol",), "field": ("field",),
    "obj_id": ("objID", "obj_id", "objid"),
    "photoobj_ra": ("photoobj_ra", "ra"), "photoobj_dec": ("photoobj_dec", "dec"),
    "apstar_id": ("apstar_id",), "star_ra": ("star_ra",), "star_dec": ("star_dec",), "teff_casjobs": ("teff",),
}
# Gaia DR3 columns of a cross-match with gaia_source (optional; stellarexp/data/gaia_parallax.py)
for _c in ("parallax", "parallax_error", "phot_g_mean_mag", "nu_eff_used_in_astrometry",
           "pseudocolour", "ecl_lat", "astrometric_params_solved"):
    CROSS_COLUMNS[_c] = (_c,)
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


def is_missing(values) -> np.ndarray:
    """True where a value is not measured: non-finite or a -9999-style sentinel.

    Parameters
    ----------
    values : array-like
        Numbers (anything ``numpy.asarray(..., dtype=float)`` accepts).

    Returns
    -------
    numpy.ndarray of bool
    """
    v = np.asarray(values, dtype=float)
    return ~np.isfinite(v) | (v <= SENTINEL_BELOW)


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
            # astropy.table takes about half a second to import: only for FITS files
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


def canonicalise(df: pd.DataFrame, spec: dict[str, tuple[str, ...]], required,
                 source: str) -> pd.DataFrame:
    """Rename columns of ``df`` to canonical names (case-insensitive); check ``required``.

    Parameters
    ----------
    df : pandas.DataFrame
        The table as read.
    spec : dict of str to tuple of str
        Canonical name -> accepted spellings (e.g. :data:`CROSS_COLUMNS`).
    required : collection of str
        Canonical names that must be present.
    source : str
        Names the table in the error message.

    Returns
    -------
    pandas.DataFrame
        Only the recognised columns, under their canonical names.

    Raises
    ------
    CatalogError
        A required column is missing (the message lists the closest columns present).
    """
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
    df = canonicalise(df, CROSS_COLUMNS, required, f"{name} (CasJobs cross-match table)")
    for col in ("run", "camcol", "field", "obj_id") + tuple(f"flags_{b}" for b in sdss.BANDS):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(-1).astype(np.int64)
    if "apstar_id" in df:
        df["apstar_id"] = df["apstar_id"].astype(str).str.strip().replace({"nan": "", "None": "", "<NA>": ""})
    return df.reset_index(drop=True)


def read_labels(source) -> pd.DataFrame:
    """Read an APOGEE allStar-like label file with canonical lower-case column names.

    ``APSTAR_ID`` is optional (coordinates are then the only join key); ``SNR`` is optional and
    used to rank duplicated entries.

    Parameters
    ----------
    source : path-like or pandas.DataFrame
        The label file (CSV/FITS/Parquet) or an already loaded DataFrame.

    Returns
    -------
    pandas.DataFrame
        Columns ``ra, dec, teff, logg, fe_h, <label>_err, fe_h_flag`` and, when present,
        ``apogee_id, apstar_id, snr``.

    Raises
    ------
    CatalogError
        A required column is missing, or the labels are in other units (e.g. Teff in kK).
    """
    name = "label DataFrame" if isinstance(source, pd.DataFrame) else str(source)
    df = source.copy() if isinstance(source, pd.DataFrame) else read_table(source)
    df = canonicalise(df, LABEL_COLUMNS, LABEL_REQUIRED, f"{name} (APOGEE allStar label file)")
    for col in ("apogee_id", "apstar_id"):
        if col in df:
            df[col] = df[col].astype(str).str.strip().replace({"nan": "", "None": "", "<NA>": ""})
    for col in LABEL_REQUIRED + (["snr"] if "snr" in df else []):
        if col != "fe_h_flag":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["fe_h_flag"] = pd.to_numeric(df["fe_h_flag"], errors="coerce")
    # Teff in kK or log10: stop here
    check_label_units({k: df[k] for k in LABELS}, f"{name} (APOGEE allStar label file)",
                      {"teff": "TEFF", "logg": "LOGG", "fe_h": "FE_H"}, error=CatalogError)
    return df.reset_index(drop=True)
