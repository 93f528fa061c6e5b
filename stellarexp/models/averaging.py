"""The paper's backbone weight averaging: the mean of the last K epochs before overfitting.

Rule (paper sections 2.3 (i) and 4; numbers are config keys of ``stage=backbone``):

1. Smooth the per-epoch validation loss with a centred moving average of ``smooth`` epochs
   (shrinking at the ends). The *overfitting point* is the epoch of its minimum.
2. The window is the ``k`` epochs ending at the overfitting point (fewer when training is
   shorter: then everything there is, and :attr:`AveragingPlan.note` says so).
3. *Volatile* epochs are left out: raw validation loss above the window's median by more than
   ``mad_multiple`` times the window's MAD (median absolute deviation, unscaled). A MAD of 0
   drops nothing.
4. Epochs whose snapshot is no longer on disk are reported as missing.

Snapshots live on disk in a bounded ring (:class:`SnapshotRing`), never as a list of state dicts
in memory, and the average is accumulated one snapshot at a time (:func:`average_snapshots`).
BatchNorm running statistics of an average of weights do not belong to those weights, so
:func:`recompute_batchnorm` re-estimates them on training data (the default); averaging the
buffers instead is the cheaper, approximate option.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from stellarexp.io_utils import atomic_path


@dataclass
class AveragingPlan:
    """Which epochs enter the average, and why.

    Attributes
    ----------
    overfit_epoch : int
        Epoch of the minimum of the smoothed validation loss.
    window : list of int
        The (up to) ``k`` epochs ending at ``overfit_epoch``.
    used : list of int
        Epochs averaged (window minus volatile minus missing).
    volatile : list of int
        Epochs of the window left out as volatile.
    missing : list of int
        Non-volatile epochs of the window without a snapshot.
    k : int
        Requested window length.
    note : str
        Human-readable remark ("" when the full window was used).
    """

    overfit_epoch: int
    window: list[int]
    used: list[int]
    volatile: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    k: int = 50
    note: str = ""

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Centred moving average over ``window`` points (shrinking at the ends; NaNs ignored)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v.copy()
    half = window // 2
    out = np.empty_like(v)
    for i in range(v.size):
        part = v[max(0, i - half): i + half + 1]
        part = part[np.isfinite(part)]
        out[i] = part.mean() if part.size else np.nan
    return out


def select_epochs(epochs: Sequence[int], val_loss: Sequence[float], *, k: int = 50,
                  smooth_window: int = 5, mad_multiple: float = 3.0,
                  available: Iterable[int] | None = None) -> AveragingPlan:
    """Apply the averaging rule of the module docstring to a validation curve.

    Parameters
    ----------
    epochs : sequence of int
        Epoch numbers, increasing.
    val_loss : sequence of float
        Validation loss of each epoch (non-finite values count as volatile).
    k : int
        Window length (the paper: 50).
    smooth_window : int
        Moving-average length used to find the overfitting point.
    mad_multiple : float
        Volatility threshold in MADs above the window median.
    available : iterable of int, optional
        Epochs with a snapshot on disk (default: all).

    Returns
    -------
    AveragingPlan
    """
    epochs = np.asarray(epochs, dtype=int)
    loss = np.asarray(val_loss, dtype=float)
    if epochs.size == 0 or epochs.size != loss.size:
        raise ValueError(f"need one validation loss per epoch, got {epochs.size} epochs and "
                         f"{loss.size} losses")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    smoothed = smooth(loss, smooth_window)
    if not np.isfinite(smoothed).any():
        raise ValueError("no finite validation loss: nothing to average")
    end = int(np.nanargmin(smoothed))
    idx = np.arange(max(0, end - k + 1), end + 1)
    window = loss[idx]
    finite = np.isfinite(window)
    med = float(np.median(window[finite]))
    mad = float(np.median(np.abs(window[finite] - med)))
    volatile_mask = ~finite | ((window > med + mad_multiple * mad) if mad > 0 else False)
    avail = {int(e) for e in (epochs if available is None else available)}
    used, volatile, missing = [], [], []
    for i, is_volatile in zip(idx, np.broadcast_to(volatile_mask, idx.shape)):
        e = int(epochs[i])
        if is_volatile:
            volatile.append(e)
        elif e not in avail:
            missing.append(e)
        else:
            used.append(e)
    notes = []
    if len(idx) < k:
        notes.append(f"only {len(idx)} epochs up to the overfitting point (k={k}): "
                     "averaged what there is")
    if volatile:
        notes.append(f"{len(volatile)} volatile epoch(s) left out")
    if missing:
        notes.append(f"{len(missing)} epoch(s) without a snapshot (ring too small)")
    if not used:
        # never return an empty average: fall back to the best available epoch
        cand = [int(e) for e in epochs if int(e) in avail]
        if not cand:
            raise ValueError("no snapshot is available for any epoch")
        best = min(cand, key=lambda e: loss[list(epochs).index(e)]
                   if np.isfinite(loss[list(epochs).index(e)]) else np.inf)
        used = [best]
        notes.append(f"no usable epoch in the window: fell back to epoch {best}")
    return AveragingPlan(int(epochs[end]), [int(epochs[i]) for i in idx], used, volatile,
                         missing, int(k), "; ".join(notes))


class SnapshotRing:
    """Per-epoch weight snapshots on disk, keeping only the newest ``capacity`` files.

    Parameters
    ----------
    directory : path-like
        Folder of ``epoch-000123.pt`` files (weights-only ``torch.save`` of a state dict).
    capacity : int
        Snapshots kept; older ones are deleted as new ones arrive.
    """

    _NAME = re.compile(r"^epoch-(\d+)\.pt$")

    def __init__(self, directory, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.directory = Path(directory)
        self.capacity = int(capacity)

    def path(self, epoch: int) -> Path:
        """File of ``epoch``'s snapshot."""
        return self.directory / f"epoch-{int(epoch):06d}.pt"

    def epochs(self) -> list[int]:
        """Epochs with a snapshot on disk, increasing."""
        if not self.directory.is_dir():
            return []
        found = (self._NAME.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(self, epoch: int, state_dict: dict) -> Path:
        """Write ``state_dict`` (copied to CPU) as ``epoch``'s snapshot and trim the ring."""
        dest = self.path(epoch)
        with atomic_path(dest) as tmp:
            torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
        for old in self.epochs()[:-self.capacity]:
            self.path(old).unlink(missing_ok=True)
        return dest

    def load(self, epoch: int) -> dict:
        """State dict of ``epoch`` (weights only, CPU tensors)."""
        return torch.load(self.path(epoch), map_location="cpu", weights_only=True)


def average_snapshots(paths: Sequence) -> dict:
    """Element-wise mean of the state dicts stored at ``paths``, loaded one at a time.

    Floating tensors (weights and BatchNorm running mean/var) are averaged in float64 and cast
    back; integer tensors (``num_batches_tracked``) are taken from the last snapshot.
    """
    if not paths:
        raise ValueError("no snapshot to average")
    total: dict = {}
    last: dict = {}
    for p in paths:
        state = torch.load(p, map_location="cpu", weights_only=True)
        if (total or last) and set(state) != set(total) | set(last):
            raise ValueError(f"snapshot {p} has different keys from the first one")
        for key, value in state.items():
            if value.is_floating_point():
                acc = value.to(torch.float64)
                total[key] = acc if key not in total else total[key] + acc
            else:
                last[key] = value
    n = len(paths)
    ref = state  # the last snapshot: dtypes and the model's key order
    out = {key: (value / n).to(ref[key].dtype) for key, value in total.items()}
    out.update(last)
    return {key: out[key] for key in ref}


def recompute_batchnorm(model, batches: Iterable, *, device=None, max_batches: int | None = None
                        ) -> int:
    """Re-estimate every BatchNorm's running mean and variance on ``batches``.

    Running statistics are reset and accumulated as an exact cumulative average
    (``momentum=None``) over the batches, in train mode without gradients; the model's mode and
    each layer's momentum are restored afterwards.

    Parameters
    ----------
    model : torch.nn.Module
    batches : iterable
        Image tensors ``[B, ...]`` or dicts with an ``"image"`` entry (training data).
    device : torch.device, optional
    max_batches : int, optional
        Stop after this many batches.

    Returns
    -------
    int
        Number of images seen (0 when the model has no BatchNorm: nothing is done).
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                x = batch["image"] if isinstance(batch, dict) else batch
                if device is not None:
                    x = x.to(device)
                model(x)
                seen += int(x.shape[0])
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        model.train(was_training)
    return seen
