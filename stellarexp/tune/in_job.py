"""Inside a job of an Optuna sweep: the job's own trial, for reporting and pruning."""

from __future__ import annotations

import optuna
from hydra.core.hydra_config import HydraConfig

from stellarexp.tune.samplers import make_pruner
from stellarexp.tune.storages import open_storage


def current_trial():
    """The Optuna trial of the running Hydra job, or ``None`` outside an Optuna sweep.

    A stage may report intermediate values and honour the sweep's pruner::

        trial = current_trial()
        if trial is not None:
            trial.report(val_loss, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

    The sweeper records a raised ``TrialPruned`` as PRUNED.
    """
    if not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().sweeper
    number = sweeper.get("trial_number")
    if number is None or not sweeper.get("study_name"):
        return None
    storage = open_storage(sweeper.get("storage"))
    study = optuna.load_study(study_name=str(sweeper.study_name), storage=storage,
                              pruner=make_pruner(sweeper.get("pruner")))
    trial = study.get_trials(deepcopy=False)[int(number)]
    return optuna.trial.Trial(study, trial._trial_id)
