"""The on-disk format of a package folder, and :func:`assemble` that writes one.

A *package* is a folder holding copies of the parts' artifacts, as the stages logged them:

``backbone/``
    ``weights.pt``, ``model.json``, ``scalers.json`` of the averaged ConViT (band scales inside).
``head/``
    the Bayes-by-Backprop head (``weights.pt``, ``model.json`` with its label scaler) and, when
    the head run has one, ``recalibration.json`` (:mod:`stellarexp.evaluate.calibration`).
``classifier/``, ``head_dwarf/``, ``head_giant/`` (optional)
    the logg classifier and the two logg heads (paper Eq. 20); ``logg_recalibration.json``
    (the ``logg_heads`` run's ``heads/recalibration.json``) calibrates their combined logg.
``package.json``
    run ids, targets, the logg choice, the number of head draws, and the training ranges of the
    labels and of the 10 extinction-corrected colours (for the out-of-range flag).

Logged as an MLflow pyfunc model (:mod:`stellarexp.models.packaged`), the folder is the model's
``artifacts/package/`` (artifact key :data:`ARTIFACT_KEY`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from stellarexp.io_utils import atomic_path

PACKAGE_FORMAT = 1
ARTIFACT_KEY = "package"
PART_DIRS = ("backbone", "head", "classifier", "head_dwarf", "head_giant")
IMAGE_SHAPE = (5, 48, 48)


class PackageError(ValueError):
    """A package folder (or the input given to it) that cannot be used; the message says why."""


def assemble(folder, parts: Mapping[str, str | Path], info: dict) -> Path:
    """Write a package folder from downloaded part folders.

    Parameters
    ----------
    folder : path-like
        Destination (created; must not hold another package).
    parts : mapping
        Part name (:data:`PART_DIRS`) -> downloaded artifact folder. ``backbone`` and ``head``
        are required; ``classifier``, ``head_dwarf`` and ``head_giant`` come together or not.
    info : dict
        Written into ``package.json`` (run ids, targets, ranges, logg choice, n_samples).
    """
    folder = Path(folder)
    missing = [p for p in ("backbone", "head") if p not in parts]
    if missing:
        raise PackageError(f"a package needs the parts {missing}")
    unknown = sorted(set(parts) - set(PART_DIRS))
    if unknown:
        raise PackageError(f"unknown package parts {unknown}; known: {PART_DIRS}")
    if (folder / "package.json").exists():
        raise PackageError(f"{folder} already holds a package")
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in parts.items():
        shutil.copytree(Path(src), folder / name)
    meta = {"format": PACKAGE_FORMAT, "parts": sorted(parts), **info}
    with atomic_path(folder / "package.json") as tmp:  # last: marks the package complete
        tmp.write_text(json.dumps(meta, indent=2, default=float))
    return folder
