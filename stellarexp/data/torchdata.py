"""Torch Dataset and Lightning DataModule over the dataset HDF5 file.

Images keep their flux: every pixel of band ``b`` goes through the same stretch
``x' = asinh(x / s_b)`` whatever the star, with ``s_b`` one fixed softening per band (by
default the robust pixel noise of the training images' borders). A star twice as bright
therefore maps to larger values, and magnitudes stay recoverable from the inputs.

Worker strategy: a :class:`StarImageDataset` pickles only its row indices, labels and
scalers. The HDF5 file is opened lazily, read-only, by the first ``__getitem__`` in each
process (a handle inherited through ``fork`` is never used), so ``num_workers`` processes read
chunks from disk concurrently without copying the file. ``in_memory=True`` instead reads the
subset's images once into a torch tensor in shared memory, which workers map, not copy; without
rotation the stretch is applied then, once, instead of every epoch.

Batches: the dataset implements ``__getitems__``, so a loader makes each batch with one gather
(or one HDF5 read per run of rows), one stretch and one vectorised D4 pass, not item by item.

Import cost: this module imports torch and lightning; nothing in ``stellarexp.data`` imports it
implicitly.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from stellarexp.data.dataset import LABELS, SPLITS, DatasetError, _open, eval_subset, fold_of
from stellarexp.sdss import BANDS

DEFAULT_BORDER = 4
"""Width in pixels of the cutout frame whose pixels estimate the per-band noise."""

_MAD_TO_SIGMA = 1.4826
_BLOCK = 256  # images per HDF5 read when scanning a subset
SUBSETS = ("train", "val", "test", "all")


class EmptySubsetError(DatasetError):
    """The requested split/subset selects no star of the dataset file."""


# --------------------------------------------------------------------------- image scaling


def _border_pixels(images: np.ndarray, border: int) -> np.ndarray:
    """Pixels within ``border`` of the edge of each image, per band: ``[5, n]``."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != len(BANDS):
        raise ValueError(f"images must be [N, {len(BANDS)}, H, W], got {images.shape}")
    h, w = images.shape[-2:]
    if not 0 < border <= min(h, w) // 2:
        raise ValueError(f"border must be in 1..{min(h, w) // 2}, got {border}")
    ring = np.ones((h, w), dtype=bool)
    ring[border : h - border, border : w - border] = False
    return np.moveaxis(images[:, :, ring], 1, 0).reshape(len(BANDS), -1)


def _robust_sigma(pixels: np.ndarray) -> np.ndarray:
    """1.4826 MAD per row, falling back to the std, then 1, when the MAD is degenerate."""
    out = np.empty(len(pixels))
    for b, values in enumerate(pixels):
        values = values[np.isfinite(values)]
        sigma = (
            _MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))) if values.size else np.nan
        )
        if not (np.isfinite(sigma) and sigma > 0):
            # Heavily quantised or constant borders: the MAD can be 0.
            sigma = float(np.std(values)) if values.size else np.nan
        if not (np.isfinite(sigma) and sigma > 0):
            warnings.warn(
                f"band {BANDS[b]}: no usable border pixels to estimate the noise; scale set to 1",
                stacklevel=3,
            )
            sigma = 1.0
        out[b] = sigma
    return out


def fit_band_scales(images, *, border: int = DEFAULT_BORDER) -> np.ndarray:
    """Robust noise level of each band, pooled over all images: the default softenings.

    Parameters
    ----------
    images : array-like, float ``[N, 5, H, W]``
        Cutouts in nanomaggies (the training images).
    border : int
        Only pixels within ``border`` of the cutout edge are used, so the central star does
        not inflate the estimate.

    Returns
    -------
    numpy.ndarray, shape (5,)
        ``1.4826 * MAD`` of the border pixels of each band, in nanomaggies (positive).
    """
    return _robust_sigma(_border_pixels(images, border))


@dataclass
class BandScaler:
    """One fixed stretch per band: ``x' = asinh(x / s_b)`` (or ``x / s_b`` for ``linear``).

    Parameters
    ----------
    scales : array-like, shape (5,)
        Softening ``s_b`` per band, in nanomaggies (the same units as the images).
    stretch : {"asinh", "linear"}
        ``asinh`` is linear for ``|x| << s_b`` (noise) and logarithmic for bright pixels.
    """

    scales: np.ndarray
    stretch: str = "asinh"

    def __post_init__(self):
        self.scales = np.asarray(self.scales, dtype=np.float64).reshape(-1)
        if self.scales.shape != (len(BANDS),) or not np.all(
            np.isfinite(self.scales) & (self.scales > 0)
        ):
            raise ValueError(
                f"scales must be {len(BANDS)} positive finite numbers, got {self.scales}"
            )
        if self.stretch not in ("asinh", "linear"):
            raise ValueError(f"stretch must be 'asinh' or 'linear', got {self.stretch!r}")

    @classmethod
    def fit(cls, images, *, border: int = DEFAULT_BORDER, stretch: str = "asinh") -> BandScaler:
        """Scaler with :func:`fit_band_scales` of ``images`` as softenings."""
        return cls(fit_band_scales(images, border=border), stretch)

    def _shaped(self, x):
        # Band axis is -3 for both [5, H, W] and [N, 5, H, W].
        s = self.scales.reshape(-1, 1, 1)
        if isinstance(x, torch.Tensor):
            return torch.as_tensor(s, dtype=x.dtype, device=x.device)
        return s.astype(np.result_type(x, np.float32), copy=False)

    def transform(self, x):
        """Stretch images ``[..., 5, H, W]`` (numpy or torch, nanomaggies)."""
        y = x / self._shaped(x)
        if self.stretch == "linear":
            return y
        return torch.asinh(y) if isinstance(y, torch.Tensor) else np.arcsinh(y)

    __call__ = transform

    def inverse(self, y):
        """Back to nanomaggies from stretched images."""
        if self.stretch == "asinh":
            y = torch.sinh(y) if isinstance(y, torch.Tensor) else np.sinh(y)
        return y * self._shaped(y)

    def to_dict(self) -> dict:
        """JSON-serialisable state."""
        return {
            "scales": [float(s) for s in self.scales],
            "stretch": self.stretch,
            "bands": "".join(BANDS),
        }

    @classmethod
    def from_dict(cls, state: dict) -> BandScaler:
        """Inverse of :meth:`to_dict`."""
        bands = state.get("bands", "".join(BANDS))
        if bands != "".join(BANDS):
            raise ValueError(f"band scales are for bands {bands!r}, expected {''.join(BANDS)!r}")
        return cls(np.asarray(state["scales"], dtype=np.float64), state.get("stretch", "asinh"))


# --------------------------------------------------------------------------- labels


@dataclass
class LabelScaler:
    """Per-target standardisation ``(y - mean) / std`` fitted on the training labels.

    NaN labels (label-free datasets, missing values) stay NaN. A target with no finite
    training value gets ``mean = 0, std = 1`` (identity) and ``fitted`` False for it.

    Parameters
    ----------
    names : sequence of str
        Target names, in column order.
    mean, std : array-like, shape (n_targets,)
    fitted : array-like of bool, optional
        Whether each target's statistics come from data.
    """

    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    fitted: np.ndarray | None = None

    def __post_init__(self):
        self.names = tuple(self.names)
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        n = len(self.names)
        self.fitted = (
            np.ones(n, bool)
            if self.fitted is None
            else np.asarray(self.fitted, dtype=bool).reshape(-1)
        )
        if not (self.mean.shape == self.std.shape == self.fitted.shape == (n,)):
            raise ValueError(f"mean/std/fitted must have one value per target {self.names}")
        if not np.all(np.isfinite(self.std) & (self.std > 0)):
            raise ValueError(f"std must be positive and finite, got {self.std}")

    @classmethod
    def fit(cls, labels, names: Sequence[str]) -> LabelScaler:
        """Mean and std of each column of ``labels`` ``[N, n_targets]``, NaNs ignored."""
        labels = np.asarray(labels, dtype=np.float64).reshape(-1, len(names))
        finite = np.isfinite(labels)
        count = finite.sum(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are handled below
            mean = np.nanmean(labels, axis=0)
            std = np.nanstd(labels, axis=0)
        fitted = count > 0
        mean = np.where(fitted, mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        return cls(tuple(names), mean, std, fitted)

    def _shaped(self, values, y):
        if isinstance(y, torch.Tensor):
            return torch.as_tensor(values, dtype=y.dtype, device=y.device)
        return values

    def transform(self, y):
        """Standardise ``y`` ``[..., n_targets]`` (numpy or torch)."""
        return (y - self._shaped(self.mean, y)) / self._shaped(self.std, y)

    __call__ = transform

    def inverse(self, z):
        """Physical units from standardised values ``[..., n_targets]``."""
        return z * self._shaped(self.std, z) + self._shaped(self.mean, z)

    def inverse_scale(self, s):
        """Physical units for a spread (standard deviation, interval width): ``s * std``."""
        return s * self._shaped(self.std, s)

    def to_dict(self) -> dict:
        """JSON-serialisable state."""
        return {
            "names": list(self.names),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "fitted": self.fitted.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict) -> LabelScaler:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(state["names"]), state["mean"], state["std"], state.get("fitted"))


# --------------------------------------------------------------------------- augmentation


def dihedral(x, k: int):
    """The ``k``-th element (0..7) of the dihedral group D4 applied to the last two axes.

    ``k = 0..3`` rotate by ``90 k`` degrees; ``k = 4..7`` mirror left-right first, then rotate.
    Works on numpy arrays and torch tensors; returns a contiguous copy for tensors.
    """
    k = int(k)
    if not 0 <= k < 8:
        raise ValueError(f"k must be in 0..7, got {k}")
    if isinstance(x, torch.Tensor):
        y = torch.flip(x, dims=(-1,)) if k >= 4 else x
        return torch.rot90(y, k % 4, dims=(-2, -1)).contiguous()
    y = np.asarray(x)
    y = y[..., ::-1] if k >= 4 else y
    return np.ascontiguousarray(np.rot90(y, k % 4, axes=(-2, -1)))


def dihedral_views(x):
    """All 8 D4 views of ``x`` (``[..., H, W]``, square), stacked on a new leading axis.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor, shape ``[..., H, H]``

    Returns
    -------
    same type as ``x``, shape ``[8, ..., H, H]``
        View ``k`` is :func:`dihedral` ``(x, k)``; the order is fixed, so features cached per
        view can be matched across runs.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral views need square images, got {tuple(x.shape[-2:])}")
    views = [dihedral(x, k) for k in range(8)]
    return torch.stack(views) if isinstance(x, torch.Tensor) else np.stack(views)


def dihedral_batch(x: torch.Tensor, ks) -> torch.Tensor:
    """Apply D4 element ``ks[j]`` to image ``x[j]`` of a batch ``[N, ..., H, H]``.

    One :func:`dihedral` call per distinct element (at most 8) instead of one per image.
    Returns a new tensor; ``x`` is left intact.
    """
    ks = torch.as_tensor(ks, dtype=torch.int64).reshape(-1)
    if len(ks) != len(x):
        raise ValueError(f"one D4 element per image: got {len(ks)} for {len(x)} images")
    out = torch.empty_like(x)
    for k in torch.unique(ks).tolist():
        sel = (ks == k).nonzero().squeeze(1)
        out[sel] = dihedral(x[sel], k)
    return out


def rotate(x: torch.Tensor, degrees) -> torch.Tensor:
    """Rotate images ``[C, H, W]`` or ``[N, C, H, W]`` by ``degrees`` about their centre.

    ``degrees`` is one angle, or (for a batch) one angle per image. Bilinear interpolation;
    pixels rotated in from outside are 0 (the sky level of sky-subtracted frames). Apply it to
    linear fluxes, before any stretch.
    """
    single = x.ndim == 3
    batch = x.unsqueeze(0) if single else x
    theta = torch.deg2rad(torch.as_tensor(degrees, dtype=torch.float64).reshape(-1))
    if len(theta) not in (1, batch.shape[0]):
        raise ValueError(f"one angle or one per image: got {len(theta)} for {batch.shape[0]}")
    c, s, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
    mat = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], -2)
    mat = mat.to(dtype=batch.dtype, device=batch.device).expand(batch.shape[0], 2, 3)
    grid = torch.nn.functional.affine_grid(mat, list(batch.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(
        batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out[0] if single else out


@dataclass
class Augment:
    """Random training augmentation of one image ``[5, H, W]`` in nanomaggies.

    Parameters
    ----------
    dihedral : bool
        Apply one of the 8 D4 views, uniformly at random (exact, no interpolation).
    rotation : bool
        Also rotate by a uniform random angle in ``[-max_rotation_deg, max_rotation_deg]``
        (bilinear interpolation; off by default).
    max_rotation_deg : float

    Notes
    -----
    Draws come from ``generator`` when given, else from torch's global generator.
    :class:`StarDataModule` gives each training dataset copy (main process or worker) its own
    generator seeded from the loader's seed, so augmentations are reproducible.
    """

    dihedral: bool = True
    rotation: bool = False
    max_rotation_deg: float = 180.0

    @property
    def active(self) -> bool:
        """Whether this augmentation changes anything."""
        return self.dihedral or self.rotates

    @property
    def rotates(self) -> bool:
        """Whether arbitrary-angle rotation (which interpolates pixels) is on."""
        return self.rotation and self.max_rotation_deg > 0

    def batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch ``[N, 5, H, W]``: independent draws per image, vectorised.

        The rotation angles are drawn first (``N`` of them), then the ``N`` D4 elements.
        """
        n = len(x)
        if self.rotates:
            angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2.0 - 1.0)
            x = rotate(x, angles * self.max_rotation_deg)
        if self.dihedral:
            x = dihedral_batch(x, torch.randint(8, (n,), generator=generator))
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.batch(x.unsqueeze(0), generator)[0]


# --------------------------------------------------------------------------- file access


def _iter_rows(
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


def _read_rows(images_ds, rows: np.ndarray) -> np.ndarray:
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


def _read_table(path, targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Folds ``[N]``, labels ``[N, T]`` (float32), N and the fingerprint of a dataset file."""
    with _open(path) as h5:
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


def _empty_subset_error(path, split: str, subset: str, folds: np.ndarray) -> EmptySubsetError:
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
        folds, labels, _, self.fingerprint = _read_table(self.path, self.targets)
        if rows is None:
            self.rows = subset_rows(folds, split, subset)
            if len(self.rows) == 0:
                raise _empty_subset_error(self.path, split, subset, folds)
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
            with _open(self.path) as h5:
                shape = (len(self.rows),) + tuple(h5["images"].shape[1:])
                images = torch.empty(shape, dtype=torch.float32).share_memory_()
                for pos, block in _iter_rows(h5["images"], self.rows):
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
            import h5py

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
            x = torch.from_numpy(_read_rows(self._file()["images"], self.rows[idx]))
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


# --------------------------------------------------------------------------- DataModule


class StarDataModule(LightningDataModule):
    """Train/val/test loaders of a dataset file, with global band scales and label scaling.

    Parameters
    ----------
    path : path-like
        Dataset HDF5 file.
    split : {"paper", "holdout"}
        ``paper``: folds 0-7 train, 8-9 val, no test. ``holdout``: 0-6 / 7 / 8-9.
    targets : sequence of str
    batch_size : int
    eval_batch_size : int, optional
        Batch size of val/test/predict loaders (default ``batch_size``).
    num_workers : int
        Loader processes (0: batches are made in the training process). Workers are
        persistent when > 0.
    pin_memory : bool, optional
        Page-locked batches for faster host-to-GPU copies. Default: on exactly when the attached
        trainer runs on CUDA; never on without CUDA (pinning would only cost time).
    prefetch_factor : int, optional
        Batches each worker prepares ahead (torch's default, 2, when ``None``); ignored
        without workers.
    augment : bool
        Random D4 views of the training images (val/test/predict are never augmented).
    rotation : bool
        Arbitrary-angle rotations on top (off by default).
    max_rotation_deg : float
    stretch : {"asinh", "linear"}
    band_scales : sequence of 5 floats, optional
        Fixed softenings ``s_b`` (nanomaggies). Default: :func:`fit_band_scales` of the training
        subset's images.
    border : int
        Border width used to fit the band scales.
    standardize_targets : bool
        Standardise targets with a :class:`LabelScaler` fitted on the training subset.
    label_scaler : LabelScaler or dict, optional
        Use this scaler instead of fitting one (e.g. the training run's, at prediction).
    in_memory : bool
        Load subset images into shared memory instead of lazy per-worker HDF5 reads.
    seed : int
        Seed of the training loader's shuffling and augmentation.
    drop_last : bool, optional
        Drop the last incomplete training batch. Default: only when it would hold a single
        sample (BatchNorm cannot train on one).
    predict_subset : str, optional
        Subset served by ``predict_dataloader`` (default: the split's evaluation subset;
        ``all`` for a label-free file).

    Notes
    -----
    ``state_dict`` holds the band scaler and the label scaler; Lightning stores it in
    checkpoints and restores it with ``load_state_dict``, so a resumed or predicting run reuses
    the training scales instead of refitting them on other data.
    """

    def __init__(
        self,
        path,
        *,
        split: str = "paper",
        targets: Sequence[str] = LABELS,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        prefetch_factor: int | None = None,
        augment: bool = True,
        rotation: bool = False,
        max_rotation_deg: float = 180.0,
        stretch: str = "asinh",
        band_scales: Sequence[float] | None = None,
        border: int = DEFAULT_BORDER,
        standardize_targets: bool = True,
        label_scaler: LabelScaler | dict | None = None,
        in_memory: bool = False,
        seed: int = 0,
        drop_last: bool | None = None,
        predict_subset: str | None = None,
    ):
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0 or (prefetch_factor is not None and prefetch_factor < 1):
            raise ValueError(
                f"num_workers must be >= 0 and prefetch_factor >= 1 (or None), got "
                f"{num_workers} and {prefetch_factor}"
            )
        self.path = Path(path)
        self.split = split
        self.targets = tuple(targets)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory
        self.prefetch_factor = None if prefetch_factor is None else int(prefetch_factor)
        self.augment = augment
        self.rotation = rotation
        self.max_rotation_deg = max_rotation_deg
        self.stretch = stretch
        self.border = border
        self.standardize_targets = standardize_targets
        self.in_memory = in_memory
        self.seed = int(seed)
        self.drop_last = drop_last
        self.predict_subset = predict_subset
        self._scaler = BandScaler(band_scales, stretch) if band_scales is not None else None
        if isinstance(label_scaler, dict):
            label_scaler = LabelScaler.from_dict(label_scaler)
        self._label_scaler = label_scaler
        self._table = None
        self._datasets: dict[str, StarImageDataset] = {}
        self._generator: torch.Generator | None = None

    # ---------------------------------------------------------------- metadata and scalers

    def _folds_labels(self):
        if self._table is None:
            folds, labels, _, fp = _read_table(self.path, self.targets)
            self._table = (folds, labels, fp)
        return self._table

    def rows(self, subset: str) -> np.ndarray:
        """File rows of ``subset`` under this module's split (may be empty)."""
        return subset_rows(self._folds_labels()[0], self.split, subset)

    def _train_rows(self) -> np.ndarray:
        rows = self.rows("train")
        if len(rows) == 0:
            raise _empty_subset_error(self.path, self.split, "train", self._folds_labels()[0])
        return rows

    def _ensure_scalers(self) -> None:
        if self._scaler is None:
            rows = self._train_rows()
            parts = []
            with _open(self.path) as h5:
                for _, block in _iter_rows(h5["images"], rows):
                    parts.append(_border_pixels(block, self.border))
            self._scaler = BandScaler(_robust_sigma(np.concatenate(parts, axis=1)), self.stretch)
        if self._label_scaler is None and self.standardize_targets:
            _, labels, _ = self._folds_labels()
            train = labels[self._train_rows()]
            self._label_scaler = LabelScaler.fit(train, self.targets)
            if not self._label_scaler.fitted.all():
                unfitted = [n for n, ok in zip(self.targets, self._label_scaler.fitted) if not ok]
                warnings.warn(
                    f"{self.path}: no finite training labels for {unfitted} (label-free file?); "
                    "their scaling is the identity. Pass the training run's label_scaler to "
                    "predict on such a file.",
                    stacklevel=3,
                )

    @property
    def scaler(self) -> BandScaler:
        """The band scaler (fitted on first access when no scales were given)."""
        self._ensure_scalers()
        return self._scaler

    @property
    def band_scales(self) -> np.ndarray:
        """Softening ``s_b`` per band, nanomaggies, shape (5,)."""
        return self.scaler.scales.copy()

    @property
    def label_scaler(self) -> LabelScaler | None:
        """Target standardisation (``None`` when ``standardize_targets`` is false)."""
        self._ensure_scalers()
        return self._label_scaler

    @property
    def target_names(self) -> tuple[str, ...]:
        """Names of the target columns, in order."""
        return self.targets

    @property
    def n_train(self) -> int:
        """Number of training stars."""
        return len(self.rows("train"))

    @property
    def n_val(self) -> int:
        """Number of validation stars."""
        return len(self.rows("val"))

    @property
    def n_test(self) -> int:
        """Number of test stars (0 under ``split=paper``)."""
        return len(self.rows("test"))

    @property
    def fingerprint(self) -> str:
        """Content fingerprint of the dataset file (tags runs)."""
        return self._folds_labels()[2]

    # ---------------------------------------------------------------- datasets

    def dataset(self, subset: str) -> StarImageDataset:
        """The (cached) :class:`StarImageDataset` of ``subset``; augmented only for ``train``."""
        if subset not in self._datasets:
            self._ensure_scalers()
            self._datasets[subset] = StarImageDataset(
                self.path,
                self.split,
                subset,
                self.targets,
                augment=self.augment and subset == "train",
                rotation=self.rotation,
                max_rotation_deg=self.max_rotation_deg,
                scaler=self._scaler,
                label_scaler=self._label_scaler,
                in_memory=self.in_memory,
            )
        return self._datasets[subset]

    def _predict_subset(self) -> str:
        return self.predict_subset or eval_subset(self.split)

    def setup(self, stage: str | None = None) -> None:
        """Fit the scalers on the training subset and build the datasets ``stage`` needs.

        ``fit``: train and val; ``validate``: val; ``test``: test (an error under
        ``split=paper`` or when the test folds are empty); ``predict``: ``predict_subset``;
        ``None``: train, val, and test when the split has test folds.
        """
        subsets = {
            "fit": ["train", "val"],
            "validate": ["val"],
            "test": ["test"],
            "predict": [self._predict_subset()],
        }.get(stage)
        if subsets is None:
            subsets = ["train", "val"] + (["test"] if SPLITS[self.split]["test"] else [])
        for subset in subsets:
            self.dataset(subset)

    @property
    def pins_memory(self) -> bool:
        """Whether the loaders made now pin their batches (see ``pin_memory``)."""
        if not torch.cuda.is_available():
            return False
        if self.pin_memory is not None:
            return bool(self.pin_memory)
        trainer = getattr(self, "trainer", None)
        try:
            return trainer is not None and trainer.strategy.root_device.type == "cuda"
        except (AttributeError, RuntimeError):  # a trainer without a strategy yet
            return False

    def _loader(self, subset: str, train: bool) -> DataLoader:
        ds = self.dataset(subset)
        kwargs = {
            "batch_size": self.batch_size if train else self.eval_batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pins_memory,
            "persistent_workers": self.num_workers > 0,
        }
        if self.num_workers > 0 and self.prefetch_factor is not None:
            kwargs["prefetch_factor"] = self.prefetch_factor
        if train:
            if self._generator is None:
                # Created once so successive epochs differ but the whole run is reproducible.
                self._generator = torch.Generator().manual_seed(self.seed)
            drop_last = self.drop_last
            if drop_last is None:
                drop_last = len(ds) > self.batch_size and len(ds) % self.batch_size == 1
            if self.num_workers == 0:
                # Main-process loading: the dataset's own generator, seeded from the run's seed.
                ds.seed_augmentation(int(torch.randint(2**62, (), generator=self._generator)))
            kwargs.update(
                shuffle=True,
                generator=self._generator,
                drop_last=drop_last,
                worker_init_fn=seed_worker,
            )
        return DataLoader(ds, **kwargs)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches."""
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in file order, unaugmented."""
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        """Test batches (``split=holdout`` only)."""
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        """Batches of ``predict_subset`` (default: the split's evaluation subset)."""
        return self._loader(self._predict_subset(), False)

    # ---------------------------------------------------------------- checkpoint state

    def state_dict(self) -> dict:
        """Band and label scalers plus identifying facts; stored in Lightning checkpoints."""
        self._ensure_scalers()
        return {
            "band_scaler": self._scaler.to_dict(),
            "label_scaler": self._label_scaler.to_dict()
            if self._label_scaler is not None
            else None,
            "targets": list(self.targets),
            "split": self.split,
            "fingerprint": self.fingerprint,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Reuse saved scalers (training run's) and rebuild datasets with them."""
        self._scaler = BandScaler.from_dict(state_dict["band_scaler"])
        self.stretch = self._scaler.stretch
        ls = state_dict.get("label_scaler")
        self._label_scaler = LabelScaler.from_dict(ls) if ls is not None else None
        if self._label_scaler is not None and tuple(self._label_scaler.names) != self.targets:
            raise ValueError(
                f"saved label scaler is for {self._label_scaler.names}, "
                f"this module's targets are {self.targets}"
            )
        self._datasets.clear()  # Lightning restores after setup(): datasets are rebuilt lazily

    def teardown(self, stage: str | None = None) -> None:
        """Close HDF5 handles opened in this process."""
        for ds in self._datasets.values():
            ds.close()
