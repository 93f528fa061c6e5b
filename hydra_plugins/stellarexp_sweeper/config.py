"""Config schema of the sweeper, registered as ``hydra/sweeper/stellarexp`` in Hydra's store.

No ``from __future__ import annotations`` here: Hydra's plugin scan executes this module outside
``sys.modules``, where dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class StellarexpSweeperConf:
    """Options of :class:`~hydra_plugins.stellarexp_sweeper.sweeper.StellarexpSweeper`.

    ``None`` for a study setting (sampler, seed, direction, metric, n_trials, pruner) means
    "the study file's value, else the built-in default"; a value given here (on the command line
    as ``hydra.sweeper.<option>=...``) wins over the study file.
    """

    _target_: str = "hydra_plugins.stellarexp_sweeper.sweeper.StellarexpSweeper"
    # auto: `sweep=<study>` or interval() -> Optuna; comma lists/range() -> grid; neither -> the
    # default study of the stage. grid / optuna force one behaviour.
    mode: str = "auto"
    study: str | None = None              # study file (same as `sweep=<study>`)
    study_key: str | None = "sweep"       # job config key that names a study
    studies_dir: str | None = None        # null: the package's studies (stellarexp/studies/)
    results_dir: str | None = None        # null: $STELLAREXP_HOME/sweeps/results
    study_name: str | None = None         # full Optuna study name; null: derived
    storage: str | None = None            # null: $STELLAREXP_HOME/mlruns/optuna/journal.log
    sampler: str | None = None            # tpe | random | gp | cmaes | qmc | grid
    seed: int | None = None
    direction: str | None = None          # minimize | maximize
    metric: str | None = None             # passed to jobs as <metric_key>=<metric>
    metric_key: str | None = "optimized_metric"
    target_key: str | None = "target"     # a study tunes one value of this key
    n_trials: int | None = None           # the study's total (finished trials count)
    n_jobs: int = 1                          # trials per batch handed to the launcher
    pruner: str | None = None             # none | median | percentile | hyperband | halving
    max_consecutive_failures: int = 10       # stop the sweep after this many FAILs in a row
    heartbeat_interval: float = 30.0         # seconds between liveness marks of running trials
    grace_period: float = 300.0              # a RUNNING trial silent this long is failed
    prepare_data: bool = True                # build a missing dataset once before trial 0
    mlflow: str = "auto"                     # auto (when the job config has `tracking`) | false
    # compose each set of config-group choices once, apply the jobs' value overrides to a copy
    # (false: Hydra's full composition for every job)
    reuse_composition: bool = True
    # an Optuna sweep's console: one line per trial (the jobs' console log at WARNING, their
    # .log files keep everything; the basic launcher's per-job lines off). false: Hydra's usual
    # per-job console output
    quiet: bool = True
    params: dict[str, Any] = field(default_factory=dict)   # extra search space (key: expr)
    # overrides of these keys (and below) do not make a new study; any other command-line
    # override (seed=3, +model.params.x=...) is hashed into the study name
    identity_ignore: list[str] = field(default_factory=list)
    max_batch_size: int | None = None     # grid mode: jobs per launcher batch
    trial_number: int | None = None       # set by the sweeper in each trial's job


ConfigStore.instance().store(group="hydra/sweeper", name="stellarexp",
                             node=StellarexpSweeperConf, provider="stellarexp")
