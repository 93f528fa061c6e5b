"""From a real SDSS catalogue, a list of positions or bare frames to the cross-match table.

The pipeline (``data=sdss``, ``stage=predict``) reads a CasJobs-style cross-match table
(:data:`stellarexp.data.catalog_files.CROSS_REQUIRED`: run, camcol, field, objID, position, and per
band photo flags, psfMag, psfMagErr, extinction). ``python -m stellarexp.data crossmatch`` writes
one from

- ``calibobj``: an SDSS calibObj star file (optionally one field of it);
- ``photoobj``: a CSV from CasJobs/SkyServer with photoObj's columns (e.g. the query of
  ``python -m stellarexp.data sql``), checked and written in the canonical spelling;
- ``positions``: a CSV of RA/Dec with run, camcol, field: each field's frames are measured
  (:mod:`stellarexp.data.star_detection`) and every position gets its nearest detected star;
- ``detect``: one field's frames with no catalogue at all: the stars found on its r frame.

With ``gaia=<Gaia archive CSV>`` the rows get their Gaia DR3 parallax columns (by SDSS objID;
docs/parallax.md). With ``labels=<allStar file>`` the table also gets ``apstar_id``, ``star_ra``, ``star_dec`` of the
APOGEE star matched to each row (APSTAR_ID, else nearest within ``match_radius_arcsec``; the
paper's CasJobs query uses 0.05 arcmin = 3 arcsec), and rows without one are dropped: a labelled
table for ``data=sdss``. Without labels the table is label-free: a prediction input.
"""

from __future__ import annotations

import logging
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord, match_coordinates_sky

from stellarexp import sdss
from stellarexp.data.catalog_files import CROSS_COLUMNS, read_crossmatch, read_labels
from stellarexp.data.gaia_parallax import GAIA_COLUMNS
from stellarexp.data.label_match import match_labels
from stellarexp.data.realcheck import calibobj_to_crossmatch, locate_field
from stellarexp.data.star_detection import DetectionSettings, measure_field
from stellarexp.sdss.calibobj import load_calibobj
from stellarexp.sdss.frames import read_frame

log = logging.getLogger(__name__)

SOURCES = ("calibobj", "photoobj", "positions", "detect")
CASJOBS_NAMES = {canon: spellings[0] for canon, spellings in CROSS_COLUMNS.items()}
"""Canonical column -> the CasJobs spelling the written table uses (``objID``, ``psfMag_r``)."""


class CrossmatchError(ValueError):
    """A source that cannot become a cross-match table; the message says what to give."""


def casjobs_table(canonical: pd.DataFrame) -> pd.DataFrame:
    """A canonical cross-match table (lower-case names) in CasJobs' spelling."""
    return canonical.rename(columns={c: CASJOBS_NAMES.get(c, c) for c in canonical.columns})


def from_calibobj(path, field: int | None = None) -> pd.DataFrame:
    """The cross-match rows of a calibObj star file (all fields, or ``field``)."""
    cat = load_calibobj(path, field=field)
    if cat.empty:
        raise CrossmatchError(f"{path}: no star" + (f" in field {field}" if field is not None else ""))
    return calibobj_to_crossmatch(cat)


def from_photoobj(path) -> pd.DataFrame:
    """A CasJobs/SkyServer photoObj table, checked (every required column, named if missing)."""
    return casjobs_table(read_crossmatch(Path(path)))


def _field_frames(frame_root, run: int, camcol: int, field: int) -> dict:
    paths, _ = locate_field(frame_root, run, camcol, field)
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise CrossmatchError(f"field {run}-{camcol}-{field}: frame(s) missing: {missing}; "
                              "give frame_root= a folder holding them (SAS layout or flat)")
    return {b: read_frame(p) for b, p in paths.items()}


def field_stars(frame_root, run: int, camcol: int, field: int, *, ebv: float,
                settings: DetectionSettings, stars_only: bool = True) -> pd.DataFrame:
    """The detected (point) sources of one field as cross-match rows (photo flags 0), with the
    r ``concentration`` and ``point_source`` of :func:`~stellarexp.data.star_detection.measure_field`."""
    measured = measure_field(_field_frames(frame_root, run, camcol, field), settings, ebv=ebv)
    if stars_only:
        measured = measured[measured["is_star"]].reset_index(drop=True)
    n = len(measured)
    out = pd.DataFrame({"run": run, "camcol": camcol, "field": field,
                        "objID": sdss.obj_id(np.full(n, run), np.full(n, camcol), np.full(n, field),
                                             np.arange(1, n + 1)),
                        "photoobj_ra": measured["ra"], "photoobj_dec": measured["dec"]})
    for b in sdss.BANDS:
        out[f"flags_{b}"] = 0
    for b in sdss.BANDS:
        out[f"psfMag_{b}"] = measured[f"psfmag_{b}"].fillna(sdss.LABEL_SENTINEL)
        out[f"psfMagErr_{b}"] = measured[f"psfmagerr_{b}"].fillna(sdss.LABEL_SENTINEL)
    for b in sdss.BANDS:
        out[f"extinction_{b}"] = measured[f"extinction_{b}"]
    out["concentration"] = measured["concentration"].to_numpy()
    out["point_source"] = measured["is_star"].to_numpy()
    return out


def from_positions(path, frame_root, *, ebv: float, settings: DetectionSettings,
                   radius_arcsec: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The detected star nearest each listed position (within ``radius_arcsec``).

    Returns
    -------
    table : pandas.DataFrame
        One cross-match row per position with a star, plus the input's other columns.
    missed : pandas.DataFrame
        The positions without one, with ``reason``.
    """
    pos = pd.read_csv(path)
    lower = {c.lower(): c for c in pos.columns}
    need = ["ra", "dec", "run", "camcol", "field"]
    absent = [c for c in need if c not in lower]
    if absent:
        raise CrossmatchError(f"{path}: column(s) {absent} missing; a positions list has ra, dec "
                              "(degrees), run, camcol, field per row")
    pos = pos.rename(columns={lower[c]: c for c in need})
    tables, missed = [], []
    for (run, camcol, field), rows in pos.groupby(["run", "camcol", "field"], sort=True):
        try:
            stars = field_stars(frame_root, int(run), int(camcol), int(field), ebv=ebv,
                                settings=settings, stars_only=False)
        except (CrossmatchError, ValueError, OSError) as exc:  # this field only: recorded, skipped
            missed.append(rows.assign(reason=f"field not measured: {exc}"))
            continue
        idx, sep, _ = match_coordinates_sky(
            SkyCoord(rows["ra"].to_numpy() * u.deg, rows["dec"].to_numpy() * u.deg),
            SkyCoord(stars["photoobj_ra"].to_numpy() * u.deg, stars["photoobj_dec"].to_numpy() * u.deg))
        ok = sep.arcsec <= radius_arcsec
        missed.append(rows[~ok].assign(reason=f"no detected source within {radius_arcsec} arcsec"))
        hit = stars.iloc[idx[ok]].reset_index(drop=True)
        extra = rows[ok].drop(columns=need).reset_index(drop=True)
        tables.append(pd.concat([hit, extra.add_prefix("input_")], axis=1))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return table, pd.concat(missed, ignore_index=True) if missed else pd.DataFrame()


def attach_gaia(table: pd.DataFrame, gaia_path) -> pd.DataFrame:
    """Add the Gaia DR3 columns of a Gaia archive result (docs/parallax.md) to ``table`` by SDSS
    objID (``original_ext_source_id`` of ``gaiadr3.sdssdr13_best_neighbour``, or ``objID``);
    rows without a Gaia match keep empty Gaia columns."""
    gaia = pd.read_csv(gaia_path)
    lower = {c.lower(): c for c in gaia.columns}
    key = next((lower[k] for k in ("original_ext_source_id", "objid", "obj_id") if k in lower), None)
    if key is None:
        raise CrossmatchError(f"{gaia_path}: no SDSS object id column (original_ext_source_id or "
                              "objID) to join on")
    missing = [c for c in GAIA_COLUMNS if c not in lower]
    if "parallax" in missing or "parallax_error" in missing:
        raise CrossmatchError(f"{gaia_path}: columns {missing} missing; select them in the Gaia "
                              "archive query (docs/parallax.md)")
    cols = {lower[c]: c for c in GAIA_COLUMNS if c in lower}
    gaia = gaia[[key, *cols]].rename(columns={key: "objID", **cols})
    gaia["objID"] = pd.to_numeric(gaia["objID"], errors="coerce").astype("Int64")
    gaia = gaia.drop_duplicates("objID")
    out = table.drop(columns=[c for c in GAIA_COLUMNS if c in table]).copy()
    out["objID"] = pd.to_numeric(out["objID"], errors="coerce").astype("Int64")
    out = out.merge(gaia, on="objID", how="left")
    out["objID"] = out["objID"].astype(np.int64)
    log.info("Gaia: %d of %d rows have a parallax", int(out["parallax"].notna().sum()), len(out))
    return out


def attach_labels(table: pd.DataFrame, labels_path, radius_arcsec: float) -> pd.DataFrame:
    """Keep the rows with an APOGEE star in ``labels_path`` and add its ``apstar_id``, ``star_ra``
    and ``star_dec`` (the columns of the paper's CasJobs query)."""
    cross = read_crossmatch(table)
    labels = read_labels(Path(labels_path))
    matched, unmatched = match_labels(cross, labels, radius_arcsec)
    log.info("labels: %d of %d rows matched within %.2f arcsec (%d without)", len(matched),
             len(cross), radius_arcsec, len(unmatched))
    keep = cross["obj_id"].isin(matched["obj_id"]).to_numpy()
    out = table[keep].reset_index(drop=True)
    by_obj = matched.drop_duplicates("obj_id").set_index("obj_id")
    ids = cross.loc[keep, "obj_id"].to_numpy()
    out["apstar_id"] = by_obj.loc[ids, "lab_apstar_id"].to_numpy() if "lab_apstar_id" in by_obj else ""
    out["star_ra"] = by_obj.loc[ids, "lab_ra"].to_numpy()
    out["star_dec"] = by_obj.loc[ids, "lab_dec"].to_numpy()
    return out
