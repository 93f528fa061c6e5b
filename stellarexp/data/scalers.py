"""Fixed scalings of the image model's inputs and targets, fitted on the training stars.

:class:`BandScaler`: one stretch per band, ``x' = asinh(x / s_b)``, whatever the star, with
``s_b`` by default the robust pixel noise of the training images' borders
(:func:`fit_band_scales`), so a star twice as bright maps to larger values and magnitudes stay
recoverable. :class:`LabelScaler`: the targets' standardisation. Both serialise to JSON (the
backbone artifact) and accept numpy arrays or torch tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stellarexp.constants import MAD_TO_SIGMA
from stellarexp.sdss import BANDS

DEFAULT_BORDER = 4
"""Width in pixels of the cutout frame whose pixels estimate the per-band noise."""



def border_pixels(images: np.ndarray, border: int) -> np.ndarray:
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


def robust_pixel_sigma(pixels: np.ndarray) -> np.ndarray:
    """1.4826 MAD per row, falling back to the std, then 1, when the MAD is degenerate."""
    out = np.empty(len(pixels))
    for b, values in enumerate(pixels):
        values = values[np.isfinite(values)]
        sigma = (
            MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))) if values.size else np.nan
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
    return robust_pixel_sigma(border_pixels(images, border))


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


