"""Tabular side inputs of the image heads: scaled, fused with the backbone features (issue 30).

``model.side_inputs`` (e.g. ``[parallax]``) names columns of the star table
(:func:`stellarexp.data.features.side_input_frame`) that the heads and the logg classifier read
beside the frozen backbone's features: the backbone sees the images only, the head sees both. Each
side column is centred on its training median and scaled by its training 1.4826 MAD (robust:
the parallax error of a star without a parallax is 1,000 and would swamp a standard deviation),
clipped to +-:data:`CLIP`, and a missing value becomes 0 (the median). The scaling is fitted on the
training stars and saved with the head, so the packaged model applies the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from stellarexp.constants import MAD_TO_SIGMA

CLIP = 10.0  # scaled side inputs beyond this many robust sigmas are clipped


@dataclass
class SideScaler:
    """Per-column robust centring and scaling of side inputs.

    Attributes
    ----------
    kinds : list of str
        ``model.side_inputs`` in order.
    columns : list of str
        The side columns they make, in order.
    centre, scale : list of float
    """

    kinds: list
    columns: list
    centre: list
    scale: list

    @classmethod
    def fit(cls, frame: pd.DataFrame, kinds) -> SideScaler:
        """Fit on the training stars' raw side frame."""
        values = frame.to_numpy(float)
        centre = np.nanmedian(values, axis=0) if len(values) else np.zeros(values.shape[1])
        mad = np.nanmedian(np.abs(values - centre), axis=0) * MAD_TO_SIGMA if len(values) else \
            np.ones(values.shape[1])
        scale = np.where(np.isfinite(mad) & (mad > 0), mad, 1.0)
        return cls(list(kinds), list(frame.columns), np.nan_to_num(centre).tolist(), scale.tolist())

    def transform(self, frame: pd.DataFrame) -> torch.Tensor:
        """Scaled side inputs ``[N, k]`` (float32) of a raw side frame with :attr:`columns`."""
        missing = [c for c in self.columns if c not in frame]
        if missing:
            raise KeyError(f"side inputs {missing} missing (model.side_inputs {self.kinds})")
        z = (frame[self.columns].to_numpy(float) - np.asarray(self.centre)) / np.asarray(self.scale)
        return torch.from_numpy(np.clip(np.nan_to_num(z), -CLIP, CLIP).astype(np.float32))

    def to_dict(self) -> dict:
        return {"kinds": list(self.kinds), "columns": list(self.columns),
                "centre": list(self.centre), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> SideScaler:
        return cls(list(d["kinds"]), list(d["columns"]), list(d["centre"]), list(d["scale"]))


def fuse(features: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """Backbone features ``[..., N, D]`` with the same stars' side inputs ``[N, k]`` appended
    (broadcast over leading axes such as the 8 views)."""
    side = side.to(features.dtype).to(features.device)
    return torch.cat([features, side.expand(*features.shape[:-1], side.shape[-1])], dim=-1)
