"""A trained backbone as files: what a backbone run logs under ``backbone/`` and how to load it.

``weights.pt`` (weights-only state dict of the averaged ConViT), ``model.json`` (architecture and
targets), ``scalers.json`` (band and label scalers of its training data) and any extra JSON
(e.g. ``averaging.json``). Read by the image stages and by the packaged model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from stellarexp.data.scalers import BandScaler, LabelScaler
from stellarexp.io_utils import atomic_path, write_text_atomic
from stellarexp.models.convit import ConvitRegressor

ARTIFACT_DIR = "backbone"


@dataclass
class Backbone:
    """A logged backbone loaded back: model (eval mode), scalers and provenance."""

    model: object
    band_scaler: object
    label_scaler: object
    targets: tuple[str, ...]
    run_id: str
    info: dict


def write_backbone_artifact(folder: Path, model, arch: dict, targets, band_scaler, label_scaler,
                            extra: dict | None = None) -> Path:
    """Write the backbone artifact files into ``folder`` (then logged as ``backbone/``)."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "weights.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    write_text_atomic(folder / "model.json", json.dumps(
        {"name": "convit", "arch": arch, "targets": list(targets)}, indent=2))
    write_text_atomic(folder / "scalers.json", json.dumps(
        {"band_scaler": band_scaler.to_dict(),
         "label_scaler": label_scaler.to_dict() if label_scaler is not None else None}, indent=2))
    for name, content in (extra or {}).items():
        write_text_atomic(folder / name, json.dumps(content, indent=2, default=float))
    return folder


def read_backbone_artifact(folder: Path, run_id: str = "") -> Backbone:
    """Load a backbone from a downloaded ``backbone/`` folder."""
    folder = Path(folder)
    meta = json.loads((folder / "model.json").read_text())
    scalers = json.loads((folder / "scalers.json").read_text())
    model = ConvitRegressor(meta["targets"], **meta["arch"])
    model.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
    model.eval()
    ls = scalers.get("label_scaler")
    return Backbone(model, BandScaler.from_dict(scalers["band_scaler"]),
                    LabelScaler.from_dict(ls) if ls else None, tuple(meta["targets"]), run_id,
                    meta)
