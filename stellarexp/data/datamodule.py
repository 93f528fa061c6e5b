"""Lightning DataModule over the dataset HDF5 file: train/val/test loaders with global band
scales and label scaling (imports torch and lightning; nothing in ``stellarexp.data`` imports
it implicitly).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from stellarexp.constants import LABELS
from stellarexp.data.dataset import SPLITS, eval_subset, open_dataset
from stellarexp.data.scalers import (
    DEFAULT_BORDER,
    BandScaler,
    LabelScaler,
    border_pixels,
    robust_pixel_sigma,
)
from stellarexp.data.star_dataset import (
    StarImageDataset,
    empty_subset_error,
    iter_rows,
    read_label_table,
    seed_worker,
    subset_rows,
)


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
            folds, labels, _, fp = read_label_table(self.path, self.targets)
            self._table = (folds, labels, fp)
        return self._table

    def rows(self, subset: str) -> np.ndarray:
        """File rows of ``subset`` under this module's split (may be empty)."""
        return subset_rows(self._folds_labels()[0], self.split, subset)

    def _train_rows(self) -> np.ndarray:
        rows = self.rows("train")
        if len(rows) == 0:
            raise empty_subset_error(self.path, self.split, "train", self._folds_labels()[0])
        return rows

    def _ensure_scalers(self) -> None:
        if self._scaler is None:
            rows = self._train_rows()
            parts = []
            with open_dataset(self.path) as h5:
                for _, block in iter_rows(h5["images"], rows):
                    parts.append(border_pixels(block, self.border))
            self._scaler = BandScaler(robust_pixel_sigma(np.concatenate(parts, axis=1)), self.stretch)
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
