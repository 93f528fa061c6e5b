"""Optuna pruning for the image stages: report the per-epoch validation metric, stop bad trials.

Inside an Optuna sweep (:func:`stellarexp.in_job.current_trial` returns the job's trial), the
stages add :class:`OptunaPruning` to their Lightning trainer. After every validation epoch it
reports the study's metric (the job's ``optimized_metric``, e.g. ``val/sigma_teff``) to the
trial and raises ``optuna.TrialPruned`` when the study's pruner (``pruner:`` in the study file,
or ``hydra.sweeper.pruner``) says so; the sweeper records the trial PRUNED. Outside a sweep no
callback is added.

The metric is read from the module's per-epoch validation metrics (``val_metrics``); a final
metric named per target (``val/accuracy_logg``) is looked up per epoch under its name without the
target (``val/accuracy``) when the module logs it so.

Imports lightning: import this module inside the stages only.
"""

from __future__ import annotations

import logging
import math

import optuna
from lightning.pytorch.callbacks import Callback

from stellarexp.stages import optimized_metric
from stellarexp.tune.in_job import current_trial

log = logging.getLogger(__name__)


class OptunaPruning(Callback):
    """Report ``monitor`` after each validation epoch; raise ``TrialPruned`` when told to.

    Parameters
    ----------
    trial : optuna.trial.Trial
    monitor : str or sequence of str
        Metric name(s) tried in order in the module's ``val_metrics``.
    step_offset : int
        Added to the epoch to form the reported step (several fits in one trial report on
        disjoint steps).
    """

    def __init__(self, trial, monitor, step_offset: int = 0):
        super().__init__()
        self.trial = trial
        self.monitor = [monitor] if isinstance(monitor, str) else list(monitor)
        self.step_offset = int(step_offset)
        self.reported: list[tuple[int, float]] = []

    def _value(self, pl_module) -> float | None:
        metrics = getattr(pl_module, "val_metrics", None) or {}
        for name in self.monitor:
            if name in metrics and metrics[name] is not None:
                value = float(metrics[name])
                return value if math.isfinite(value) else None
        return None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = self._value(pl_module)
        if value is None:
            return
        step = self.step_offset + int(trainer.current_epoch)
        self.trial.report(value, step)
        self.reported.append((step, value))
        if self.trial.should_prune():
            msg = (f"trial {self.trial.number} pruned at epoch {trainer.current_epoch} "
                   f"({self.monitor[0]} = {value:.6g})")
            log.info(msg)
            raise optuna.TrialPruned(msg)


def monitor_names(cfg) -> list[str]:
    """The job's optimised metric and its per-epoch spelling without the target suffix."""
    name = optimized_metric(cfg)
    names = [name]
    target = cfg.get("target")
    if isinstance(target, str) and name.endswith(f"_{target}"):
        names.append(name[: -len(target) - 1])
    return names


def callbacks(cfg, step_offset: int = 0) -> list:
    """``[OptunaPruning]`` inside an Optuna sweep job, else ``[]``."""
    trial = current_trial()
    if trial is None:
        return []
    return [OptunaPruning(trial, monitor_names(cfg), step_offset)]
