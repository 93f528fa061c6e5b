"""The sweep engine's ask/tell loop: one Optuna study run to ``n_trials`` through a Hydra launcher.

Counting and resuming. ``n_trials`` is the study's total. Before asking, a worker takes a lock
(a file lock for journal and SQLite storages, an advisory lock in PostgreSQL), fails trials
whose worker died, counts finished (COMPLETE, PRUNED, FAIL) and running trials and asks only for
what is missing, so several workers on one storage stop at exactly ``n_trials``. Other server
databases have no shared lock: concurrent workers may overshoot by at most ``n_jobs`` per extra
worker.

Liveness. Each asked trial records its worker's host and pid, and a heartbeat thread stamps it
every ``heartbeat_interval`` seconds while it runs. A RUNNING trial whose worker process is gone
(same host) or whose stamp is older than ``grace_period`` is failed before the next ask.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.errors import HydraException
from optuna.trial import TrialState

from stellarexp.tracking.redact import install_log_redaction, redact, redact_text
from stellarexp.tune.export import best_summary
from stellarexp.tune.liveness import (
    BEAT,
    HOST,
    PID,
    REASON,
    Heartbeat,
    counted_trials,
    fail_stale_trials,
)
from stellarexp.tune.parent_run import ParentRun
from stellarexp.tune.progress import trial_line
from stellarexp.tune.samplers import make_pruner, make_sampler
from stellarexp.tune.search_space import SearchParam, quote
from stellarexp.tune.storages import ask_lock, describe_storage, has_ask_lock, open_storage
from stellarexp.tune.studies import SweepError, write_yaml_atomic

log = logging.getLogger("stellarexp.sweep")


@dataclass
class Plan:
    """Everything one Optuna sweep needs, resolved by the sweeper from config and study file."""

    study_name: str
    storage: str | None
    space: dict[str, SearchParam]
    base_overrides: list[str]
    sampler: str = "tpe"
    seed: int | None = None
    direction: str = "minimize"
    metric: str | None = None
    n_trials: int = 20
    n_jobs: int = 1
    pruner: str | None = None
    max_consecutive_failures: int = 10
    heartbeat_interval: float = 30.0
    grace_period: float = 300.0
    first_trial: dict[str, Any] = field(default_factory=dict)
    results_path: Path | None = None
    mlflow: bool = True
    attrs: dict[str, Any] = field(default_factory=dict)
    # added to each trial's job only (not to the study's identity or the re-run command)
    job_overrides: list[str] = field(default_factory=list)





def outcome(ret, metric: str | None) -> tuple[TrialState, float | None, str | None]:
    """Turn a Hydra ``JobReturn`` into (state, value, reason)."""
    try:
        # Hydra writes "Error executing job with overrides" to stderr for a failed (or pruned)
        # job: the trial's own line gives the state and the reason
        with contextlib.redirect_stderr(io.StringIO()):
            value = ret.return_value
    except optuna.TrialPruned:
        return TrialState.PRUNED, None, None
    except Exception as exc:  # noqa: BLE001 - any job error is a failed trial
        return TrialState.FAIL, None, f"{type(exc).__name__}: {exc}"[:2000]
    if isinstance(value, Mapping):
        if metric is None or metric not in value:
            return TrialState.FAIL, None, f"the job returned no {metric!r} (keys: {sorted(value)})"
        value = value[metric]
    if value is None:
        return TrialState.FAIL, None, "the job returned no value (is the metric logged?)"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return TrialState.FAIL, None, f"the job returned {value!r}, not a number"
    if not math.isfinite(value):
        return TrialState.FAIL, None, f"the job returned {value}"
    return TrialState.COMPLETE, value, None


def tell(study, trial, state: TrialState, value: float | None, reason: str | None,
         n_trials: int | None = None) -> None:
    """Record one trial's outcome (the reason of a failure as user attribute ``fail_reason``).

    With ``n_trials``, print the trial's line (:func:`stellarexp.tune.progress.trial_line`):
    k/n, its value or why it was pruned or failed, the best so far, its time.
    """
    if reason:
        reason = redact_text(reason)
        trial.set_user_attr(REASON, reason)
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
        log.debug("trial %d: value = %.6g  %s", trial.number, value, trial.params)
    else:
        study.tell(trial, state=state)
        log.debug("trial %d: %s%s", trial.number, state.name, f" ({reason})" if reason else "")
    if n_trials is not None:
        # stdout, like the final report: Lightning's bars and warnings go to stderr
        print(trial_line(study, trial.number, n_trials, reason), flush=True)



class ConsecutiveFailures(SweepError):
    """Raised when ``max_consecutive_failures`` trials in a row failed."""


def load_or_create(plan: Plan, storage):
    """Open the plan's study (creating it with its metadata when new)."""
    try:
        study = optuna.create_study(study_name=plan.study_name, storage=storage,
                                    direction=plan.direction, load_if_exists=True,
                                    pruner=make_pruner(plan.pruner))
    except ValueError as exc:
        raise SweepError(f"study {plan.study_name!r}: {exc}") from None
    if "search_space" not in study.user_attrs:
        for key, value in {**plan.attrs, "search_space": {k: p.expression for k, p in plan.space.items()},
                           "metric": plan.metric, "sampler": plan.sampler, "seed": plan.seed}.items():
            study.set_user_attr(key, redact(value))  # the storage is shared and kept: no secrets
    return study


def run(plan: Plan, sweeper, probe_cfg=None) -> dict | None:
    """Run ``plan`` to ``n_trials`` in batches of ``n_jobs`` through the sweeper's launcher.

    Returns the exported summary (see :func:`stellarexp.best_summary`) or ``None``.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we log each trial ourselves
    install_log_redaction()  # Hydra's launcher logs each job's overrides
    with ask_lock(plan.storage):  # one worker creates the tables, study, trial 0, parent run
        storage = open_storage(plan.storage)
        study = load_or_create(plan, storage)
        if plan.first_trial and not study.get_trials(deepcopy=False):
            study.enqueue_trial(plan.first_trial, user_attrs={"origin": "first_trial"})
        parent = ParentRun.open(probe_cfg, study, plan) if plan.mlflow else None
    done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    log.info("Optuna study %s in %s: %d of %d trials finished; sampler %s, %s %s",
             plan.study_name, describe_storage(plan.storage), done, plan.n_trials, plan.sampler,
             plan.direction, plan.metric or "the job's return value")
    distributions = {k: p.distribution for k, p in plan.space.items()}
    heartbeat = Heartbeat(plan.heartbeat_interval)
    job_idx, streak, sampler_ready = 0, 0, False
    try:
        while True:
            with ask_lock(plan.storage):
                stale = fail_stale_trials(study, storage, plan.grace_period,
                                          orphans=has_ask_lock(plan.storage))
                if parent is not None and stale:
                    parent.mark_killed(stale)
                trials = study.get_trials(deepcopy=False)
                taken = counted_trials(trials)
                k = min(plan.n_jobs, plan.n_trials - taken)
                if k <= 0:
                    break
                if not sampler_ready:
                    # offset the seed by the study's size: a resumed or second worker does not
                    # replay the first worker's random start-up points (QMC keeps its sequence)
                    offset = 0 if plan.seed is None or plan.sampler == "qmc" else len(trials)
                    study.sampler = make_sampler(plan.sampler, None if plan.seed is None
                                                 else plan.seed + offset, plan.space)
                    sampler_ready = True
                asked = []
                for _ in range(k):
                    trial = study.ask(distributions)
                    trial.set_user_attr(HOST, socket.gethostname())
                    trial.set_user_attr(PID, os.getpid())
                    trial.set_user_attr(BEAT, time.time())
                    asked.append(trial)
            streak = _run_batch(plan, sweeper, study, asked, parent, heartbeat, job_idx, streak,
                                validate=job_idx == 0)
            job_idx += len(asked)
    finally:
        # export what the study has so far, also when stopped by failures or Ctrl-C
        heartbeat.stop()
        # read-then-write under the lock: with several workers, a worker that read the best
        # before another's better trial completed must not write over that worker's summary
        with ask_lock(plan.storage):
            # what is exported (results file, MLflow, the console) never holds a secret
            summary = redact(best_summary(study, plan.space, plan.base_overrides, plan.metric))
            if summary is not None and plan.results_path is not None:
                summary["storage"] = describe_storage(plan.storage)
                write_yaml_atomic(plan.results_path, summary)
            if parent is not None:
                parent.finish(study, summary)
        _report(study, summary, plan)
    return summary


def _job_overrides(plan: Plan, trial, parent) -> list[str]:
    params = [plan.space[k].override(v) for k, v in trial.params.items()]
    extra = [f"hydra.sweeper.trial_number={trial.number}",
             f"hydra.sweeper.study_name={quote(plan.study_name)}", *plan.job_overrides]
    if parent is not None:
        extra += parent.trial_overrides(trial.number)
    return [*plan.base_overrides, *params, *extra]


def _run_batch(plan, sweeper, study, asked, parent, heartbeat, job_idx: int, streak: int,
               validate: bool = False) -> int:
    """Launch one batch, tell its outcomes, return the updated run of consecutive failures.

    Job configs are composed up front only when ``validate`` (first batch) or after the launcher
    refused the batch: composing twice per trial would double the per-trial overhead.
    """
    runnable = list(asked)
    if validate:
        runnable, streak = _composable(plan, sweeper, study, runnable, parent, streak)
    results = []
    while runnable:
        heartbeat.watch(runnable)
        try:
            results = sweeper.launcher.launch([_job_overrides(plan, t, parent) for t in runnable],
                                              initial_job_idx=job_idx)
            break
        except HydraException:
            if validate:
                raise
            validate = True  # find the trial whose config does not compose, launch the others
            runnable, streak = _composable(plan, sweeper, study, runnable, parent, streak)
        except BaseException as exc:
            for trial in runnable:
                with contextlib.suppress(Exception):
                    tell(study, trial, TrialState.FAIL, None, f"sweep interrupted: {type(exc).__name__}",
                         plan.n_trials)
            raise
        finally:
            heartbeat.watch([])
    for trial, ret in zip(runnable, results):
        state, value, reason = outcome(ret, plan.metric)
        with ask_lock(plan.storage):  # with several workers each k of "k/n" is printed once
            tell(study, trial, state, value, reason, plan.n_trials)
        streak = streak + 1 if state == TrialState.FAIL else 0
    if plan.max_consecutive_failures and streak >= plan.max_consecutive_failures:
        raise ConsecutiveFailures(
            f"{streak} trials in a row failed (hydra.sweeper.max_consecutive_failures="
            f"{plan.max_consecutive_failures}); see the fail_reason of the last trials in study "
            f"{plan.study_name!r} and the jobs' logs")
    return streak


def _composable(plan, sweeper, study, trials, parent, streak: int) -> tuple[list, int]:
    """Trials whose job config composes; the others are told FAIL with Hydra's message."""
    ok = []
    for trial in trials:
        try:
            sweeper.validate_batch_is_legal([_job_overrides(plan, trial, parent)])
        except Exception as exc:  # noqa: BLE001 - a config that cannot compose is a failed trial
            tell(study, trial, TrialState.FAIL, None, f"config does not compose: {exc}"[:2000],
                 plan.n_trials)
            streak += 1
            continue
        ok.append(trial)
    return ok, streak


def _report(study, summary: dict | None, plan: Plan) -> None:
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    counts = ", ".join(f"{n} {c.lower()}" for c, n in counts.items() if n)
    lines = [f"Study {plan.study_name}: {len(trials)} trials ({counts or 'none'})",
             f"storage: {describe_storage(plan.storage)}"]
    if summary is None:
        lines.append("no complete trial yet: nothing exported")
    else:
        lines.append(f"best {plan.metric or 'value'} = {summary['best_value']} "
                     f"(trial {summary['best_trial']})")
        lines += [f"  {k} = {v}" for k, v in summary["params"].items()]
        if plan.results_path is not None:
            lines.append(f"best parameters: {plan.results_path}")
        lines.append(f"re-run the best configuration:\n  {summary['command']}")
    print("\n".join(lines), flush=True)
