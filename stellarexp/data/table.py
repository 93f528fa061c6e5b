"""Star tables for the tabular stages: a user's CSV/Parquet/FITS table (``data=table``) or the
star table of a dataset file (``data=synthetic``, ``data=sdss``).

Either way the result is a :class:`StarTable` whose frame uses the dataset file's column names
(``star_id``, ``psfmag_<b>``, ``extinction_<b>``, ``teff``, ``logg``, ``fe_h``, optional
``<label>_true``, and ``fold`` or ``subset``), a name and a content fingerprint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stellarexp.constants import LABELS
from stellarexp.data import gaia_parallax
from stellarexp.data.dataset import (
    DatasetError,
    fingerprint,
    fold_of,
    read_attrs,
    read_stars,
    split_mask,
)
from stellarexp.data.features import ADJACENT_COLORS, COLOR_FEATURES, complete_colors
from stellarexp.data.gaia_parallax import GAIA_COLUMNS
from stellarexp.data.pipeline import ensure_dataset  # simulates + builds when absent
from stellarexp.data.units import check_label_units  # Teff in kK or log10: stop here
from stellarexp.sdss import BANDS, LABEL_SENTINEL

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")
_SUBSET_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                   "validation": "val", "test": "test", "testing": "test"}


@dataclass
class StarTable:
    """Stars with labels and photometry, ready for feature extraction.

    Attributes
    ----------
    stars : pandas.DataFrame
        Dataset-file column names; either ``fold`` (0-9) or ``subset`` (train/val/test).
    name : str
        Data name recorded in the MLflow ``data`` tag.
    fingerprint : str
        sha256 of the content (the dataset file's own fingerprint for HDF5 datasets).
    path : pathlib.Path
        File the stars came from.
    """

    stars: pd.DataFrame
    name: str
    fingerprint: str
    path: Path

    @property
    def split_source(self) -> str:
        """``fold`` when subsets follow ``split=...``, ``column`` when the table fixes them."""
        return "column" if "subset" in self.stars else "fold"

    def subset_mask(self, split: str, subset: str) -> np.ndarray:
        """Boolean mask of ``subset`` (train/val/test) under ``split`` (paper/holdout).

        A table with a train/val/test split column ignores ``split``: its own column decides.
        """
        if "subset" in self.stars:
            if subset not in SUBSETS:
                raise ValueError(f"unknown subset {subset!r}; choose one of {SUBSETS}")
            return (self.stars["subset"] == subset).to_numpy()
        return split_mask(self.stars["fold"].to_numpy(), split, subset)


def _column_map(spec, what: str) -> dict[str, str] | None:
    """Band -> column from a mapping, or from a template such as ``'psfMag_{band}'``."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if "{band}" not in spec:
            raise ValueError(f"data.columns.{what}: a template needs '{{band}}', got {spec!r}")
        return {b: spec.format(band=b) for b in BANDS}
    if isinstance(spec, Mapping):
        missing = [b for b in BANDS if b not in spec]
        if missing:
            raise ValueError(f"data.columns.{what} lacks bands {missing}")
        return {b: str(spec[b]) for b in BANDS}
    raise ValueError(f"data.columns.{what} must be a band mapping or a '{{band}}' template")


def _color_map(spec, what: str = "colors") -> dict[str, str] | None:
    """Colour -> column from a mapping (any colours linking the bands) or a list of ten or four."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return {str(c): str(col) for c, col in spec.items()}
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        for names in (COLOR_FEATURES, ADJACENT_COLORS):
            if len(spec) == len(names):
                return dict(zip(names, map(str, spec)))
        raise ValueError(
            f"data.columns.{what} lists {len(spec)} columns; give ten, in the order "
            f"{list(COLOR_FEATURES)}, or the four adjacent ones {list(ADJACENT_COLORS)}, or a "
            "mapping {u-g: col, ...}"
        )
    raise ValueError(f"data.columns.{what} must be a mapping or a list of column names")


def _label_map(columns: Mapping) -> tuple[dict[str, str], str]:
    """Label -> column: ``labels``, or ``default_labels`` when it is null; with the key named."""
    if columns.get("labels") is not None:
        return dict(columns["labels"]), "data.columns.labels"
    return dict(columns.get("default_labels") or {}), "data.columns.default_labels"


def _read_any(path: Path, fmt: str, columns: list[str], hdu,
              optional: Sequence[str] = ()) -> pd.DataFrame:
    """The ``columns`` of the table (all required) and those of ``optional`` it has."""
    if fmt == "auto":
        name = path.name.lower()
        if name.endswith((".parquet", ".pq")):
            fmt = "parquet"
        elif name.endswith((".fits", ".fit", ".fits.gz", ".fit.gz")):
            fmt = "fits"
        elif name.endswith((".csv", ".csv.gz", ".txt", ".tsv")):
            fmt = "csv"
        else:
            raise ValueError(f"cannot tell the format of {path}; set data.format=csv|parquet|fits")
    if fmt == "csv":
        sep = "\t" if path.name.lower().endswith(".tsv") else ","
        frame = pd.read_csv(path, sep=sep)
    elif fmt == "parquet":
        frame = pd.read_parquet(path)
    elif fmt == "fits":
        from astropy.table import Table

        table = Table.read(path, hdu=hdu)
        keep = [c for c in [*columns, *optional] if c in table.colnames]
        frame = table[keep].to_pandas()
        frame.attrs["available"] = list(table.colnames)
    else:
        raise ValueError(f"unknown table format {fmt!r}; choose auto, csv, parquet or fits")
    available = frame.attrs.get("available", list(frame.columns))
    missing = [c for c in columns if c not in available]
    if missing:
        raise DatasetError(
            f"{path} lacks columns {missing}; it has {list(available)}. Map your column names "
            "with data.columns.* (see docs/training.md)"
        )
    return frame[list(dict.fromkeys([*columns, *(c for c in optional if c in available)]))]


def _numeric(values: pd.Series) -> np.ndarray:
    out = np.array(pd.to_numeric(values, errors="coerce"), dtype=float)  # a writable copy
    out[out == LABEL_SENTINEL] = np.nan
    return out


def read_table(path, columns: Mapping, *, fmt: str = "auto", hdu=1, name: str = "table",
               targets: Sequence[str] = ()) -> StarTable:
    """Read a user's star table and map its columns onto the dataset file's names.

    Parameters
    ----------
    path : path-like
        CSV (``.csv``, ``.csv.gz``, ``.tsv``), Parquet or FITS table.
    columns : mapping
        ``id``, ``magnitudes``, ``magnitude_errors``, ``extinction``, ``colors``,
        ``color_errors``, ``labels`` (null: ``default_labels``), ``truth``, ``split``
        (see ``stellarexp/conf/data/table.yaml``).
    fmt : str
        ``auto`` (by extension), ``csv``, ``parquet`` or ``fits``.
    hdu : int or str
        FITS extension holding the table.
    name : str
        Data name for the MLflow tag.
    targets : sequence of str
        Labels the run trains on: their columns must be mapped and present. Other mapped labels
        (and truth columns) are read when the table has them, else left NaN, so the content
        (and fingerprint) does not depend on the run's target.

    Returns
    -------
    StarTable
        Colours given directly are completed to the ten (:func:`complete_colors`), with
        ``<colour>_err`` columns when colour or magnitude errors are mapped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"table {path} does not exist (set data.path=...)")
    mags = _column_map(columns.get("magnitudes"), "magnitudes")
    mag_errs = _column_map(columns.get("magnitude_errors"), "magnitude_errors")
    ext = _column_map(columns.get("extinction"), "extinction")
    cols = _color_map(columns.get("colors"))
    col_errs = _color_map(columns.get("color_errors"), "color_errors") or {}
    labels, labels_key = _label_map(columns)
    truth = dict(columns.get("truth") or {})
    unknown = sorted(set(labels) - set(LABELS)) + sorted(set(truth) - set(LABELS))
    if unknown:
        raise ValueError(f"unknown labels {unknown} in data.columns; labels are {list(LABELS)}")
    unmapped = [t for t in targets if t not in labels]
    if unmapped:
        raise ValueError(
            f"target {unmapped} needs label columns that {labels_key} ({labels}) does not map; "
            f"give them, e.g. 'data.columns.labels={{{unmapped[0]}: <column>}}', or choose "
            f"target={next(iter(labels), '<label>')}"
        )
    if mags is None and cols is None:
        raise ValueError("data.columns needs magnitudes, colours, or both")
    if col_errs and cols is None:
        raise ValueError("data.columns.color_errors needs data.columns.colors")
    id_col, split_col = columns.get("id"), columns.get("split")
    gaia = dict(columns.get("gaia") or {})
    unknown_gaia = sorted(set(gaia) - set(GAIA_COLUMNS))
    if unknown_gaia:
        raise ValueError(f"data.columns.gaia maps {unknown_gaia}; it takes the Gaia DR3 columns "
                         f"{list(GAIA_COLUMNS)}")

    wanted: list[str] = []
    for group in (mags, mag_errs, ext, cols, col_errs):
        wanted += list((group or {}).values())
    wanted += [labels[t] for t in targets] + [truth[t] for t in targets if t in truth]
    wanted += [c for c in (id_col, split_col) if c] + list(gaia.values())
    optional = [*labels.values(), *truth.values()]
    raw = _read_any(path, fmt, list(dict.fromkeys(wanted)), hdu, optional=optional)

    out = pd.DataFrame(index=range(len(raw)))
    if id_col:
        ids = raw[id_col].astype(str).str.strip().to_numpy()
        if pd.Series(ids).duplicated().any():
            raise DatasetError(f"column {id_col!r} of {path} has duplicated star ids")
    else:
        ids = np.array([f"row{i}" for i in range(len(raw))], dtype=object)
    out["star_id"] = ids
    for b in BANDS:
        if mags:
            out[f"psfmag_{b}"] = _numeric(raw[mags[b]])
        if mag_errs:
            out[f"psfmagerr_{b}"] = _numeric(raw[mag_errs[b]])
        if ext:
            out[f"extinction_{b}"] = _numeric(raw[ext[b]])
    if cols:
        band_errs = {b: out[f"psfmagerr_{b}"].to_numpy() for b in BANDS} if mag_errs else None
        values, errors = complete_colors(
            {c: _numeric(raw[col]) for c, col in cols.items()},
            {c: _numeric(raw[col]) for c, col in col_errs.items()}, band_errs,
            source="data.columns.colors")
        for feature in COLOR_FEATURES:
            out[feature] = values[feature]
            if errors:
                out[f"{feature}_err"] = errors[feature]
    read = [label for label in LABELS if label in labels and labels[label] in raw]
    for label in LABELS:
        out[label] = _numeric(raw[labels[label]]) if label in read else np.nan
        if label in truth and truth[label] in raw:
            out[f"{label}_true"] = _numeric(raw[truth[label]])
    skipped = sorted(set(labels) - set(read))
    if skipped:
        log.info("%s has no column for labels %s (%s); the targets %s do not need them",
                 path, skipped, labels_key, list(targets))

    for canon, col in gaia.items():
        out[canon] = _numeric(raw[col])
    out = gaia_parallax.correct(out)  # the zero point, when the Gaia columns are given
    check_label_units({k: out[k] for k in read}, f"table {path}", labels, error=DatasetError)
    if split_col:
        values = raw[split_col]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            folds = numeric.to_numpy()
            if not np.isin(folds, np.arange(10)).all():
                raise DatasetError(f"split column {split_col!r} must hold folds 0-9 or train/val/test")
            out["fold"] = folds.astype(np.int8)
        else:
            norm = values.astype(str).str.strip().str.lower().map(_SUBSET_ALIASES)
            if norm.isna().any():
                bad = sorted(set(values[norm.isna()].astype(str)))[:5]
                raise DatasetError(
                    f"split column {split_col!r} has values {bad}; use train/val/test or folds 0-9"
                )
            out["subset"] = norm.to_numpy()
    else:
        out["fold"] = fold_of(out["star_id"])

    fp = fingerprint(np.zeros((0, len(BANDS), 0, 0), np.float32), out)
    return StarTable(stars=out, name=name, fingerprint=fp, path=path)


def read_dataset_stars(path, name: str | None = None) -> StarTable:
    """The star table of an HDF5 dataset file (no images), with the file's own fingerprint."""
    attrs = read_attrs(path)
    return StarTable(stars=read_stars(path), name=name or str(attrs.get("name", "dataset")),
                     fingerprint=str(attrs.get("fingerprint", "unknown")), path=Path(path))


def load_stars(data_cfg, targets: Sequence[str] = ()) -> StarTable:
    """Load the stars of a ``data`` config (``table``, or any config with ``dataset_path``).

    ``targets`` (labels the run trains on) must have columns in a ``table``; see
    :func:`read_table`.

    A missing synthetic dataset is simulated and built first, through
    :func:`stellarexp.data.pipeline.ensure_dataset`; other missing dataset files raise
    :class:`~stellarexp.data.dataset.DatasetError` with the command that builds them.
    """
    name = str(data_cfg["name"])
    if name == "table" or "columns" in data_cfg:
        return read_table(data_cfg["path"], data_cfg["columns"], fmt=data_cfg["format"],
                          hdu=data_cfg["hdu"], name=name, targets=targets)
    path = Path(str(data_cfg["dataset_path"]))
    if name == "synthetic":
        path = Path(ensure_dataset(data_cfg))
    return read_dataset_stars(path, name)
