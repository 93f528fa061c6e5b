"""Attention maps of the ConViT blocks (the paper's Fig. 5).

Each timm ConViT block (GPSA or MHSA) passes its attention matrix ``[B, heads, N, N]`` through
its ``attn_drop`` module; a forward hook there reads it without re-implementing attention.
The map of a block is what each image patch receives:

- blocks after the class token entered (MHSA): the class token's attention to each patch, the
  part that reaches the head;
- blocks before it (GPSA, patches only): the attention each patch receives, averaged over the
  querying patches.

Both are averaged over heads and reshaped to the patch grid.
"""

from __future__ import annotations

import numpy as np
import torch


def attention_maps(model, images) -> tuple[np.ndarray, list[str]]:
    """Per-star, per-block attention maps of a :class:`~stellarexp.models.convit.ConvitRegressor`.

    Parameters
    ----------
    model : ConvitRegressor
        In eval mode (dropout off).
    images : torch.Tensor ``[S, 5, H, W]``
        Scaled as the model was trained (its band scaler applied).

    Returns
    -------
    maps : numpy.ndarray ``[S, blocks, g, g]``
        ``g`` patches per side.
    names : list of str
        ``"GPSA 0"``, ..., ``"MHSA 5"``.
    """
    net = model.net
    grid = round(net.patch_embed.num_patches ** 0.5)
    captured: list = [None] * len(net.blocks)
    hooks = []
    for k, blk in enumerate(net.blocks):
        def hook(_module, _inputs, output, k=k):
            captured[k] = output.detach()

        hooks.append(blk.attn.attn_drop.register_forward_hook(hook))
    try:
        model.eval()
        with torch.no_grad():
            model.features(images)
    finally:
        for h in hooks:
            h.remove()
    maps, names = [], []
    for k, attn in enumerate(captured):
        if attn is None:
            raise RuntimeError(f"block {k} did not report its attention; is this a timm ConViT?")
        n = attn.shape[-1]
        if n == grid * grid + 1:  # class token first: its row, patch columns
            m = attn[:, :, 0, 1:].mean(1)
        elif n == grid * grid:
            m = attn.mean(1).mean(1)
        else:
            raise RuntimeError(f"block {k}: {n} tokens do not fit a {grid}x{grid} patch grid")
        maps.append(m.reshape(-1, grid, grid).cpu().numpy())
        kind = type(net.blocks[k].attn).__name__
        names.append(f"{kind} {k}")
    return np.stack(maps, axis=1), names
