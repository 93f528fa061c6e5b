"""Torch Dataset over the dataset HDF5 file: rows of one split and subset, scaled and augmented.

Worker strategy: a :class:`StarImageDataset` pickles only its row indices, labels and
scalers. The HDF5 file is opened lazily, read-only, by the first ``__getitem__`` in each
process (a handle inherited through ``fork`` is never used), so ``num_workers`` processes read
chunks from disk concurrently without copying the file. ``in_memory=True`` instead reads the
subset's images once into a torch tensor in shared memory, which workers map, not copy; without
rotation the stretch is applied then, once, instead of every epoch.

Batches: the dataset implements ``__getitems__``, so a loader makes each batch with one gather
(or one HDF5 read per run of rows), one stretch and one vectorised D4 pass, not item by item.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from stellarexp.constants import LABELS
from stellarexp.data.augmentation import Augment
from stellarexp.data.dataset import SPLITS, DatasetError, eval_subset, fold_of, open_dataset
from stellarexp.data.scalers import BandScaler, LabelScaler

_BLOCK = 256  # images per HDF5 read when scanning a subset
SUBSETS = ("train", "val", "test", "all")


class EmptySubsetError(DatasetError):
    """The requested split/subset selects no star of the dataset file."""




def iter_rows(
    images_ds, rows: np.ndarray, block: int = _BLOCK
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions, images)`` for sorted ``rows`` reading contiguous HDF5 spans.

    Contiguous slices are much faster than h5py point selections on gzip-chunked data.
    """
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    start = 0
    while start < len(sorted_rows):
        lo = sorted_rows[start]
        stop = np.searchsorted(sorted_rows, lo + block, side="left")
        span = images_ds[lo : sorted_rows[stop - 1] + 1]
        yield order[start:stop], span[sorted_rows[start:stop] - lo]
        start = stop


def read_rows(images_ds, rows: np.ndarray) -> np.ndarray:
    """Images of file ``rows`` (any order) as ``[n, ...]`` float32, in that order.

    Rows at most two apart are read as one contiguous span: on gzip-chunked data one span
    read costs about 0.25 ms per image, a separate read about 0.6 ms, so a one-row gap is
    cheaper to read through than to skip. Shuffled batches thus cost one read per image,
    evaluation batches (consecutive rows) one read per batch.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows),) + tuple(images_ds.shape[1:]), dtype=np.float32)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    breaks = np.flatnonzero(np.diff(sorted_rows) > 2) + 1
    for part in np.split(np.arange(len(rows)), breaks):
        if not len(part):
            continue
        lo, hi = sorted_rows[part[0]], sorted_rows[part[-1]]
        span = images_ds[lo : hi + 1]
        out[order[part]] = span[sorted_rows[part] - lo]
    return out


def read_label_table(path, targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Folds ``[N]``, labels ``[N, T]`` (float32), N and the fingerprint of a dataset file."""
    with open_dataset(path) as h5:
        stars = h5["stars"]
        n = int(h5["images"].shape[0])
        if "fold" in stars:
            folds = stars["fold"][()].astype(np.int64)
        else:
            folds = fold_of(
                [s.decode() if isinstance(s, bytes) else s for s in stars["star_id"][()]]
            )
        missing = [t for t in targets if t not in stars]
        if missing:
            raise DatasetError(
                f"{path}: no target column(s) {missing}; the star table has {sorted(stars)}"
            )
        labels = (
            np.stack([stars[t][()].astype(np.float32) for t in targets], axis=1)
            if targets
            else np.zeros((n, 0), np.float32)
        )
        fp = str(h5.attrs.get("fingerprint", ""))
    return folds, labels, n, fp


def subset_rows(folds, split: str, subset: str) -> np.ndarray:
    """Row indices of ``subset`` (train/val/test/all) under ``split`` (paper/holdout).

    Parameters
    ----------
    folds : array-like of int
    split : str
    subset : str

    Returns
    -------
    numpy.ndarray of int64, increasing
    """
    folds = np.asarray(folds)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    if subset == "all":
        return np.arange(len(folds), dtype=np.int64)
    if subset not in SPLITS[split]:
        raise ValueError(f"unknown subset {subset!r}; choose one of {SUBSETS}")
    return np.flatnonzero(np.isin(folds, SPLITS[split][subset])).astype(np.int64)


def empty_subset_error(path, split: str, subset: str, folds: np.ndarray) -> EmptySubsetError:
    wanted = SPLITS[split].get(subset, ())
    if subset in SPLITS[split] and not wanted:
        hint = (
            f"split {split!r} has no {subset} folds by design; evaluate on "
            f"{eval_subset(split)!r} or use split=holdout"
        )
    else:
        counts = {int(f): int(c) for f, c in zip(*np.unique(folds, return_counts=True))}
        hint = (
            f"folds {list(wanted)} hold no star; the file has {len(folds)} stars with fold counts "
            f"{counts}; rebuild a larger dataset or choose another split"
        )
    return EmptySubsetError(
        f"dataset file {path}: subset {subset!r} of split {split!r} is empty ({hint})"
    )


class StarImageDataset(Dataset):
    """Stars of one subset of a dataset file as ``{"image", "target", "index"}`` items.

    Parameters
    ----------
    path : path-like
        Dataset HDF5 file (see ``docs/architecture.md``).
    split : {"paper", "holdout"}
    subset : {"train", "val", "test", "all"}
        ``all`` ignores the folds (prediction on a label-free file).
    targets : sequence of str
        Star-table columns returned as ``target`` (in this order).
    augment : bool or Augment
        ``True`` applies random D4 views (and rotation if ``rotation``); ``False`` none.
    rotation : bool
        With ``augment=True``: also rotate by random arbitrary angles (off by default).
    max_rotation_deg : float
    scaler : BandScaler, optional
        Stretch applied to every image; ``None`` returns linear nanomaggies.
    label_scaler : LabelScaler, optional
        Standardisation of the targets; ``None`` returns physical units.
    in_memory : bool
        Read the subset's images once into shared memory instead of reading the file lazily.
        Unless rotation is on, they are stored already stretched and cleaned (the stretch is
        per pixel, so it commutes with the D4 views): items then cost a copy and a flip.
    rows : array-like of int, optional
        Explicit file rows (overrides ``split``/``subset``).

    Notes
    -----
    ``image`` is float32 ``[5, H, W]``; non-finite pixels become 0 (sky level) so one bad pixel
    cannot poison a batch. ``target`` is float32 ``[n_targets]`` and keeps NaN for missing
    labels: mask them in the loss (``torch.isfinite``). ``index`` is the row in the file.

    A :class:`~torch.utils.data.DataLoader` fetches a batch through :meth:`__getitems__`: one
    gather (or one HDF5 read per run of rows), one stretch and one D4 pass for the whole batch.
    ``scaler`` and ``label_scaler`` are fixed at construction (build a new dataset to change
    them).
    """

    def __init__(
        self,
        path,
        split: str = "paper",
        subset: str = "train",
        targets: Sequence[str] = LABELS,
        *,
        augment: bool | Augment = False,
        rotation: bool = False,
        max_rotation_deg: float = 180.0,
        scaler: BandScaler | None = None,
        label_scaler: LabelScaler | None = None,
        in_memory: bool = False,
        rows=None,
    ):
        self.path = Path(path)
        self.split, self.subset = split, subset
        self.targets = tuple(targets)
        folds, labels, _, self.fingerprint = read_label_table(self.path, self.targets)
        if rows is None:
            self.rows = subset_rows(folds, split, subset)
            if len(self.rows) == 0:
                raise empty_subset_error(self.path, split, subset, folds)
        else:
            self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)
            if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(folds)):
                raise IndexError(f"rows out of range for {self.path} ({len(folds)} stars)")
        self.folds = folds[self.rows]
        self.labels = labels[self.rows]  # physical units
        if isinstance(augment, Augment):
            self.augment = augment
        else:
            self.augment = Augment(
                dihedral=bool(augment),
                rotation=bool(augment) and rotation,
                max_rotation_deg=max_rotation_deg,
            )
        self._scaler = scaler
        self._label_scaler = label_scaler
        if label_scaler is not None and tuple(label_scaler.names) != self.targets:
            raise ValueError(
                f"label scaler is for {label_scaler.names}, dataset targets are {self.targets}"
            )
        target = (
            label_scaler.transform(self.labels.astype(np.float64)) if label_scaler else self.labels
        )
        self._target = torch.from_numpy(np.asarray(target, dtype=np.float32))
        self._h5 = None
        self._h5_pid = None
        self._rng: torch.Generator | None = None
        self._images = None
        # Stretching once at load instead of every epoch: the asinh is most of an item's cost
        # (~40 ms for 64 images on one core). Rotation interpolates linear fluxes, so it needs
        # the raw images and keeps the per-batch stretch.
        self._prescaled = bool(in_memory) and not self.augment.rotates
        if in_memory:
            with open_dataset(self.path) as h5:
                shape = (len(self.rows),) + tuple(h5["images"].shape[1:])
                images = torch.empty(shape, dtype=torch.float32).share_memory_()
                for pos, block in iter_rows(h5["images"], self.rows):
                    block = torch.from_numpy(np.asarray(block, dtype=np.float32))
                    images[torch.from_numpy(pos)] = self._finish(block) if self._prescaled else block
            self._images = images

    @property
    def scaler(self) -> BandScaler | None:
        """The band stretch applied to every image (``None``: linear nanomaggies)."""
        return self._scaler

    @property
    def label_scaler(self) -> LabelScaler | None:
        """The target standardisation (``None``: physical units)."""
        return self._label_scaler

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """Stretch and clean images ``[..., 5, H, W]`` (the per-pixel part of an item)."""
        if self._scaler is not None:
            x = self._scaler.transform(x)
        return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def __len__(self) -> int:
        return len(self.rows)

    def _file(self):
        # One handle per process, opened on first use; never reuse one inherited by fork.
        pid = os.getpid()
        if self._h5 is None or self._h5_pid != pid:
            self._h5 = h5py.File(self.path, "r")
            self._h5_pid = pid
        return self._h5

    def raw_image(self, i: int) -> torch.Tensor:
        """Image ``i`` of the subset in nanomaggies, unaugmented and unscaled, ``[5, H, W]``.

        With ``in_memory`` (no rotation) the memory holds stretched images, so this reads the
        file; with rotation on it is a view of the shared tensor: do not modify it in place.
        """
        if self._images is not None and not self._prescaled:
            return self._images[i]
        return torch.from_numpy(
            np.asarray(self._file()["images"][int(self.rows[i])], dtype=np.float32)
        )

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Items ``indices`` as a list of dicts, computed as one batch (see the class notes).

        ``DataLoader`` calls this with a batch's indices and collates the list as usual.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self._images is not None:
            x = torch.index_select(self._images, 0, torch.from_numpy(idx))  # a new tensor
        else:
            x = torch.from_numpy(read_rows(self._file()["images"], self.rows[idx]))
        if self.augment.active:
            x = self.augment.batch(x, self._rng)
        if not self._prescaled:
            x = self._finish(x)
        return [
            {"image": x[j], "target": self._target[i], "index": int(self.rows[i])}
            for j, i in enumerate(idx.tolist())
        ]

    def seed_augmentation(self, seed: int | None) -> None:
        """Draw augmentations from a private generator seeded by ``seed`` (``None``: global RNG)."""
        self._rng = None if seed is None else torch.Generator().manual_seed(int(seed) % 2**63)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None  # h5py handles do not pickle; each worker opens its own
        state["_h5_pid"] = None
        state["_rng"] = None  # reseeded per worker by seed_worker
        return state

    def close(self) -> None:
        """Close this process's HDF5 handle (reopened on next access)."""
        if self._h5 is not None and self._h5_pid == os.getpid():
            self._h5.close()
        self._h5 = None
        self._h5_pid = None


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed the worker's dataset copy from the loader's seed.

    Inside a worker ``torch.initial_seed()`` is the loader's base seed plus the worker id, and
    the base seed is drawn from the loader's generator, so a seeded loader reproduces the
    augmentations independently of how the workers are scheduled.
    """
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, StarImageDataset):
        info.dataset.seed_augmentation(info.seed)
    np.random.seed(torch.initial_seed() % 2**32)  # for user transforms that use numpy


