"""Stage registry: ``stage=<name>`` -> one function ``run(cfg, run) -> dict | None``.

A stage receives the job's config (an OmegaConf ``DictConfig``) and the
:class:`~stellarexp.tracking.run_handle.TrackedRun` of its MLflow run; it logs its artifacts through
that handle and returns its final metrics (``{"val/sigma_teff": ...}``), which the entry point
logs in one batch and from which it returns ``optimized_metric`` to Hydra.

Stages are registered as ``"module:function"`` strings and imported only when selected, so one
stage's dependencies (torch for the image stages) never load for another. Adding a stage is one
line in :data:`STAGES` plus ``stellarexp/conf/stage/<name>.yaml`` (or :func:`register` from a plugin).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from stellarexp.config import ConfigError
from stellarexp.constants import LABELS

STAGES: dict[str, str] = {
    "baseline": "stellarexp.stages.baseline:run",
    "report": "stellarexp.stages.report:run",
    "backbone": "stellarexp.stages.backbone:run",
    "head": "stellarexp.stages.head:run",
    "logg_classifier": "stellarexp.stages.logg:run_classifier",
    "logg_heads": "stellarexp.stages.logg:run_heads",
    "perturb": "stellarexp.stages.perturb:run",
    "package": "stellarexp.stages.package:run",
    "predict": "stellarexp.stages.predict:run",
    "predict_survey": "stellarexp.stages.predict_survey:run",
    "realism": "stellarexp.stages.realism:run",
}


def register(name: str, target: str) -> None:
    """Register stage ``name`` as ``"package.module:function"`` (replacing an earlier entry)."""
    if ":" not in target:
        raise ValueError(f"stage target must look like 'package.module:function', got {target!r}")
    STAGES[name] = target


def resolve(name: str) -> Callable:
    """Import and return the function of stage ``name``."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; registered stages: {sorted(STAGES)}")
    module, _, func = STAGES[name].partition(":")
    return getattr(importlib.import_module(module), func)


def targets_of(target) -> list[str]:
    """Labels selected by the ``target`` key: ``all``, one label, or a list of labels."""
    if target is None or target == "all":
        return list(LABELS)
    chosen = [target] if isinstance(target, str) else [str(t) for t in target]
    unknown = [t for t in chosen if t not in LABELS]
    if unknown or not chosen:
        raise ConfigError(f"target={target!r}: must be 'all' or one of {list(LABELS)} (or a list of them)")
    return chosen


def optimized_metric(cfg) -> str:
    """The metric a job returns: ``optimized_metric``, or ``val/sigma_<first target>``."""
    name = cfg.get("optimized_metric")
    return str(name) if name else f"val/sigma_{targets_of(cfg.get('target'))[0]}"
