"""The dataset file: one HDF5 file with images, labels, photometry, ids, folds and funnel.

Schema: see ``docs/architecture.md``. Every stage trains on such a file; its content
fingerprint tags every MLflow run so results are only compared on the same data.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import shutil
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

from stellarexp import __version__
from stellarexp.home import conf_dir
from stellarexp.io_utils import atomic_path
from stellarexp.sdss import BANDS

N_FOLDS = 10
SUBSET_NAMES = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or does not follow the schema."""


def read_splits(folder: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """The folds of each split config (``<folder>/<split>.yaml``: ``name`` and ``folds``).

    Parameters
    ----------
    folder : pathlib.Path
        The ``split`` config group (``stellarexp/conf/split``).

    Returns
    -------
    dict
        Split name -> {``train``, ``val``, ``test``: folds}.

    Raises
    ------
    ValueError
        A file without ``folds`` for every subset, a fold outside 0..9 or in two subsets.
    """
    splits = {}
    for path in sorted(folder.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        folds = spec.get("folds") or {}
        if set(folds) != set(SUBSET_NAMES):
            raise ValueError(f"{path}: 'folds' must list train, val and test (got {sorted(folds)})")
        subsets = {k: tuple(int(f) for f in folds[k] or ()) for k in SUBSET_NAMES}
        every = [f for v in subsets.values() for f in v]
        if len(set(every)) != len(every) or not all(0 <= f < N_FOLDS for f in every):
            raise ValueError(f"{path}: folds must lie in 0..{N_FOLDS - 1}, each in one subset at most")
        splits[str(spec.get("name", path.stem))] = subsets
    return splits


# split name -> {subset: folds}, from the split config group: one source for the folds
SPLITS: dict[str, dict[str, tuple[int, ...]]] = read_splits(conf_dir() / "split")


def fold_of(star_ids) -> np.ndarray:
    """Deterministic fold 0..9 of each star id (CRC32 of the id, independent of order).

    Parameters
    ----------
    star_ids : sequence of str

    Returns
    -------
    numpy.ndarray of int8
    """
    return np.array([zlib.crc32(str(s).encode()) % N_FOLDS for s in star_ids], dtype=np.int8)


def split_mask(folds, split: str, subset: str) -> np.ndarray:
    """Boolean mask of the stars of ``subset`` (train/val/test) under ``split`` (paper/holdout)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    if subset not in SPLITS[split]:
        raise ValueError(f"unknown subset {subset!r}; choose {', '.join(SUBSET_NAMES)}")
    return np.isin(np.asarray(folds), SPLITS[split][subset])


def eval_subset(split: str) -> str:
    """Subset a report evaluates on: ``val`` for the paper split, ``test`` for holdout."""
    return "test" if SPLITS[split]["test"] else "val"


@dataclass
class DatasetContent:
    """In-memory content of a dataset file."""

    images: np.ndarray
    stars: pd.DataFrame
    rejects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["star_id", "reason", "detail"]))
    funnel: list[tuple[str, int]] = field(default_factory=list)
    name: str = "dataset"
    label_free: bool = False
    extra_attrs: dict = field(default_factory=dict)


def _column_to_h5(values: pd.Series) -> np.ndarray:
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        return np.array([str(v).encode("utf-8") for v in values], dtype=object)
    return values.to_numpy()


def fingerprint(images: np.ndarray, stars: pd.DataFrame) -> str:
    """sha256 of the images and the star table (column names, order and values)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    for col in sorted(stars.columns):
        h.update(col.encode())
        h.update(pd.util.hash_pandas_object(stars[col], index=False).to_numpy().tobytes())
    return h.hexdigest()


def write_dataset(path, content: DatasetContent) -> str:
    """Write ``content`` to ``path`` atomically and return its fingerprint.

    Parameters
    ----------
    path : path-like
        Destination ``.h5`` file.
    content : DatasetContent
        Images ``[N, 5, 48, 48]`` and the star table (N rows, must contain ``star_id``).
    """
    stars = content.stars.reset_index(drop=True).copy()
    images = np.asarray(content.images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != len(BANDS):
        raise DatasetError(f"images must be [N, {len(BANDS)}, H, W], got {images.shape}")
    if len(stars) != len(images):
        raise DatasetError(f"{len(stars)} star rows but {len(images)} images")
    if "star_id" not in stars:
        raise DatasetError("the star table needs a 'star_id' column")
    if stars["star_id"].duplicated().any():
        dup = stars.loc[stars["star_id"].duplicated(), "star_id"].iloc[0]
        raise DatasetError(f"duplicated star_id {dup!r} in the star table")
    if "fold" not in stars:
        stars["fold"] = fold_of(stars["star_id"])
    fp = fingerprint(images, stars)
    str_dt = h5py.string_dtype("utf-8")
    # HDF5 is built in memory and written with one plain file write: a full disk then gives one
    # OSError here (see _save), not HDF5's error cascade (or a crash) from inside its own writes
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_dataset("images", data=images, chunks=(1,) + images.shape[1:] if len(images) else None,
                          compression="gzip", compression_opts=1, shuffle=True)
        grp = h5.create_group("stars")
        for col in stars.columns:
            data = _column_to_h5(stars[col])
            grp.create_dataset(col, data=data, dtype=str_dt if data.dtype == object else data.dtype)
        rej = h5.create_group("rejects")
        rejects = content.rejects.reset_index(drop=True)
        for col in ("star_id", "reason", "detail"):
            vals = rejects[col] if col in rejects else pd.Series([""] * len(rejects))
            rej.create_dataset(col, data=np.array([str(v) for v in vals], dtype=object), dtype=str_dt)
        h5.attrs["name"] = content.name
        h5.attrs["fingerprint"] = fp
        h5.attrs["funnel"] = json.dumps([[str(s), int(n)] for s, n in content.funnel])
        h5.attrs["label_free"] = bool(content.label_free)
        h5.attrs["bands"] = "".join(BANDS)
        h5.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")

        h5.attrs["stellarexp_version"] = __version__
        for k, v in content.extra_attrs.items():
            h5.attrs[k] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
    _save(Path(path), buffer.getbuffer())
    return fp


_WRITE_CHUNK = 1 << 24  # bytes per write call


def _save(path: Path, data: memoryview) -> None:
    """Write ``data`` to ``path`` atomically; a full disk is one :class:`DatasetError`."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.writelines(data[start:start + _WRITE_CHUNK] for start in range(0, len(data), _WRITE_CHUNK))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
        raise DatasetError(
            f"{path}: no space left on the device while writing the dataset ({len(data) / 1e6:.0f} MB "
            f"needed, {free / 1e6:.0f} MB free in {path.parent}); nothing was written under that name. "
            "Free space, or set STELLAREXP_HOME to a folder on a larger disk, and run again") from None


def open_dataset(path):
    """Open a dataset file read-only (h5py ``File``), with a clear :class:`DatasetError` when it
    is missing or not an HDF5 file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"dataset file {path} does not exist; build it with "
            "`python -m stellarexp.data build data=...`"
        )
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"dataset file {path} is not a readable HDF5 file ({exc}); rebuild it") from exc
    if "images" not in h5 or "stars" not in h5:
        h5.close()
        raise DatasetError(f"dataset file {path} lacks the 'images' or 'stars' group; rebuild it")
    return h5


def _decode(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind in ("O", "S"):
        return np.array([a.decode("utf-8") if isinstance(a, bytes) else str(a) for a in arr], dtype=object)
    return arr


def read_stars(path) -> pd.DataFrame:
    """Read the star table (no images) of a dataset file as a DataFrame."""
    with open_dataset(path) as h5:
        return pd.DataFrame({k: _decode(h5["stars"][k][()]) for k in h5["stars"]})


def read_rejects(path) -> pd.DataFrame:
    """Read the rejects table (star_id, reason, detail) of a dataset file."""
    with open_dataset(path) as h5:
        if "rejects" not in h5:
            return pd.DataFrame(columns=["star_id", "reason", "detail"])
        return pd.DataFrame({k: _decode(h5["rejects"][k][()]) for k in h5["rejects"]})


def read_attrs(path) -> dict:
    """Read the file attributes (fingerprint, funnel decoded from JSON, name, ...)."""
    with open_dataset(path) as h5:
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()}
    attrs["funnel"] = json.loads(attrs.get("funnel", "[]"))
    return attrs


def read_images(path, index=None) -> np.ndarray:
    """Read images ``[N, 5, 48, 48]`` (all, or those at sorted integer ``index``)."""
    with open_dataset(path) as h5:
        if index is None:
            return h5["images"][()]
        index = np.asarray(index)
        order = np.argsort(index)
        out = np.empty((len(index),) + h5["images"].shape[1:], dtype=np.float32)
        out[order] = h5["images"][np.sort(index)]
        return out


def read_dataset(path) -> DatasetContent:
    """Read a whole dataset file into memory."""
    attrs = read_attrs(path)
    return DatasetContent(
        images=read_images(path),
        stars=read_stars(path),
        rejects=read_rejects(path),
        funnel=[tuple(x) for x in attrs["funnel"]],
        name=attrs.get("name", "dataset"),
        label_free=bool(attrs.get("label_free", False)),
    )
