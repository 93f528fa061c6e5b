"""Augmentation of cutouts: the dihedral group D4 (the 8 views the backbone features average
over), arbitrary rotations and the training-time :class:`Augment` policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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
