"""Stage parameters checked before a job starts: a bad value names its key and allowed range.

The ranges live in :mod:`stellarexp.limits`; each stage's own choices (e.g. ``stage.logg``) are
checked where they are read. :func:`check_stage` runs for every job
(:func:`stellarexp.train.run`), so ``stage.lr=-0.001`` stops with ``stage.lr=-0.001: must be a
number > 0`` instead of a traceback from the optimiser.
"""

from __future__ import annotations

from stellarexp.limits import STAGE_RULES, check_value
from stellarexp.stages import targets_of


def check_stage(cfg) -> None:
    """Check the numeric settings of ``cfg.stage`` (and ``target``) before the stage runs.

    Raises
    ------
    stellarexp.config.ConfigError
        Naming the key, its value and the allowed range.
    """
    stage = cfg.get("stage") or {}
    for key, rule in STAGE_RULES.items():
        if key in stage:
            check_value(f"stage.{key}", stage.get(key), rule)
    targets_of(cfg.get("target"))
