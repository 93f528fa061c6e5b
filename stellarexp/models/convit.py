"""ConViT regressor for five-band star images: timm's ``ConVit`` built from config.

The paper (section 2.3 (i)) replaces every LayerNorm of ConViT by BatchNorm, because the relative
pixel values of a star image carry physics (flux) that a per-token LayerNorm would erase.
:class:`TokenBatchNorm` is that BatchNorm: statistics per channel, pooled over the batch and the
tokens of ``[batch, tokens, channels]`` activations.

The network itself is timm's (constructor arguments only, nothing patched): ``embed_dim`` is per
head (timm multiplies it by ``num_heads``), blocks ``0 .. local_up_to_layer - 1`` are GPSA, the
rest plain MHSA, and the class token enters before block ``local_up_to_layer``. Its final
``head`` is a linear layer with one output per target (standardised labels).

Centring: cutouts put the star within half a pixel of the cutout centre. With an even number of
patches per side (48 px in 8 px patches: 6x6) that centre is a patch corner, and the star's core
is split over four tokens whose share moves with the sub-pixel offset: the network then has to
learn photometry across tokens, which it does poorly on a few thousand stars. The model therefore
centre-crops its input to ``img_size`` (``auto``: the largest odd number of patches that fits the
cutout), so the star sits on the centre of one token (40 px = 5x5 tokens of 8 px; 44 px = 11x11
of 4 px). On the 20-field quick survey this took the validation sigma of [Fe/H] from about
0.25 dex (no better than the label spread) to about 0.13 dex (docs/image_model.md).

Imports torch and timm: import this module only where a model is built.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
from timm.models.convit import ConVit
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

NORMS = ("batchnorm", "layernorm")


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the channel axis of token sequences ``[B, N, C]`` (or features ``[B, C]``).

    Each channel is normalised with the mean and variance over all tokens of all images of the
    batch (running statistics in eval mode), so relative brightness between tokens survives.

    Parameters
    ----------
    num_features : int
        Channels ``C``.
    device, dtype : optional
        Accepted so timm can build it like its own norm layers.
    **kwargs
        Passed to :class:`torch.nn.BatchNorm1d` (``eps``, ``momentum``, ...).
    """

    def __init__(self, num_features: int, device=None, dtype=None, **kwargs):
        super().__init__(num_features, device=device, dtype=dtype, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            # BatchNorm1d wants channels on axis 1: [B, N, C] -> [B, C, N] and back
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(x)


def _norm_layer(norm: str):
    if norm == "batchnorm":
        return TokenBatchNorm
    if norm == "layernorm":
        return nn.LayerNorm
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def centred_img_size(patch_size: int, cutout_size: int) -> int:
    """The largest ``img_size <= cutout_size`` tiled by an odd number of ``patch_size`` patches.

    With an odd patch grid the cutout centre (the star) is the centre of one token. ``img_size``
    and ``cutout_size`` must differ by an even number of pixels, so the crop stays centred.

    Raises
    ------
    ValueError
        When no such size exists (``patch_size`` larger than the cutout).
    """
    patch_size, cutout_size = int(patch_size), int(cutout_size)
    if patch_size < 1:
        raise ValueError(f"model.patch_size must be >= 1, got {patch_size}")
    n = cutout_size // patch_size
    while n > 0 and (n % 2 == 0 or (cutout_size - n * patch_size) % 2):
        n -= 1
    if n < 1:
        raise ValueError(
            f"model.img_size=auto: no odd number of {patch_size}-px patches fits a centred crop of "
            f"the {cutout_size}-px cutouts; set model.img_size (a multiple of model.patch_size "
            f"<= {cutout_size}) or a smaller model.patch_size")
    return n * patch_size


def check_arch(*, img_size: int, patch_size: int, depth: int, local_up_to_layer: int,
               num_heads: int, embed_dim_per_head: int) -> None:
    """Reject architectures timm would build silently wrong.

    Raises
    ------
    ValueError
        ``local_up_to_layer`` outside ``0 .. depth - 1`` (timm would then never insert the class
        token and regress from a patch token), a patch size that does not tile the image, or
        non-positive sizes.
    """
    for name, value in (("img_size", img_size), ("patch_size", patch_size), ("depth", depth),
                        ("num_heads", num_heads), ("embed_dim_per_head", embed_dim_per_head)):
        if int(value) < 1:
            raise ValueError(f"model.{name} must be >= 1, got {value}")
    if img_size % patch_size:
        raise ValueError(f"model.patch_size={patch_size} does not tile model.img_size={img_size}")
    if not 0 <= local_up_to_layer < depth:
        raise ValueError(
            f"model.local_up_to_layer={local_up_to_layer} must be in 0..depth-1={depth - 1}: "
            f"blocks 0..local_up_to_layer-1 are GPSA and the class token enters before block "
            f"local_up_to_layer, so at least one MHSA block must follow (paper: 10 GPSA + 2 MHSA, "
            f"depth=12, local_up_to_layer=10)")
    if local_up_to_layer > 0 and math.isqrt(num_heads) ** 2 != num_heads:
        warnings.warn(
            f"num_heads={num_heads} is not a square: timm's convolutional (local) initialisation "
            "of GPSA covers only the first isqrt(num_heads)**2 heads", stacklevel=3)


class ConvitRegressor(nn.Module):
    """timm ConViT with a linear regression head on the class token.

    Parameters
    ----------
    targets : sequence of str
        Output names, one output each (standardised units).
    img_size, patch_size, in_chans, depth, num_heads, embed_dim_per_head, local_up_to_layer,
    locality_strength, mlp_ratio, drop_rate, drop_path_rate : see timm's ``ConVit``
    norm : {"batchnorm", "layernorm"}
        ``batchnorm`` (the paper) puts a :class:`TokenBatchNorm` wherever timm has a LayerNorm.

    Notes
    -----
    ``forward(x)`` returns ``[B, n_targets]``; ``features(x)`` the normalised class token
    ``[B, embed_dim]`` that the Bayesian heads read.
    """

    def __init__(self, targets: Sequence[str], *, img_size: int = 48, patch_size: int = 8,
                 in_chans: int = 5, depth: int = 6, num_heads: int = 4,
                 embed_dim_per_head: int = 24, local_up_to_layer: int = 4,
                 locality_strength: float = 1.0, mlp_ratio: float = 4.0, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, norm: str = "batchnorm"):
        super().__init__()

        check_arch(img_size=img_size, patch_size=patch_size, depth=depth,
                   local_up_to_layer=local_up_to_layer, num_heads=num_heads,
                   embed_dim_per_head=embed_dim_per_head)
        self.targets = tuple(targets)
        if not self.targets:
            raise ValueError("at least one target is needed")
        self.net = ConVit(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans,
            num_classes=len(self.targets), global_pool="token", embed_dim=embed_dim_per_head,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, drop_rate=drop_rate,
            drop_path_rate=drop_path_rate, norm_layer=_norm_layer(norm),
            local_up_to_layer=local_up_to_layer, locality_strength=locality_strength)

    @property
    def embed_dim(self) -> int:
        """Width of the class token (``num_heads * embed_dim_per_head``)."""
        return int(self.net.embed_dim)

    @property
    def img_size(self) -> int:
        """Side of the centred crop the network sees (larger inputs are cropped to it)."""
        return int(self.net.patch_embed.img_size[0])

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Centre-crop ``[B, C, H, W]`` cutouts to ``img_size`` (a view; no copy).

        Raises
        ------
        ValueError
            Inputs smaller than ``img_size``, or larger by an odd number of pixels (the crop
            could not stay centred on the star).
        """
        size = self.img_size
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if (h, w) == (size, size):
            return x
        if h != w or h < size or (h - size) % 2:
            raise ValueError(
                f"the model takes {size}x{size}-px inputs, centre-cropped from larger square "
                f"cutouts (an even number of pixels larger); got {h}x{w}. Build the dataset with "
                f"data.cutouts.size >= {size} (same parity), or train with a matching model.img_size")
        m = (h - size) // 2
        return x[..., m:m + size, m:m + size]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised class token ``[B, embed_dim]`` (the head's input)."""
        return self.net.forward_head(self.net.forward_features(self.crop(x)), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.crop(x))


ARCH_KEYS = ("img_size", "patch_size", "in_chans", "depth", "num_heads", "embed_dim_per_head",
             "local_up_to_layer", "locality_strength", "mlp_ratio", "drop_rate",
             "drop_path_rate", "norm")


def arch_kwargs(model_cfg: Mapping) -> dict:
    """The constructor arguments of :class:`ConvitRegressor` found in ``model_cfg``.

    ``model_cfg`` is the resolved ``model`` node of ``model=convit`` (its preset already
    interpolated) or the ``model.json`` of a logged backbone. ``img_size: auto`` becomes
    :func:`centred_img_size` of ``patch_size`` and ``cutout_size`` (default 48), so logged
    architectures always hold a number.
    """
    kwargs = {k: model_cfg[k] for k in ARCH_KEYS if k in model_cfg and model_cfg[k] is not None}
    if str(kwargs.get("img_size", "")).lower() == "auto":
        kwargs["img_size"] = centred_img_size(kwargs.get("patch_size", 8),
                                              int(model_cfg.get("cutout_size") or 48))
    return kwargs


def build_convit(model_cfg: Mapping, targets: Sequence[str]) -> ConvitRegressor:
    """A :class:`ConvitRegressor` from a ``model`` config node and the target names."""
    if str(model_cfg["name"]) != "convit":
        raise ValueError(f"image stages need model=convit, got model={model_cfg.get('name')!r}")
    return ConvitRegressor(targets, **arch_kwargs(model_cfg))


def count_norms(module: nn.Module) -> dict[str, int]:
    """Number of LayerNorm and BatchNorm layers in ``module`` (for checks and logs)."""
    return {"layernorm": sum(isinstance(m, nn.LayerNorm) for m in module.modules()),
            "batchnorm": sum(isinstance(m, _BatchNorm) for m in module.modules())}
