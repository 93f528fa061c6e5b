"""The Optuna side of the sweeper: storage, samplers, liveness of trials and the ask/tell loop.

Private module (Hydra's plugin scan skips names starting with ``_``): it imports Optuna at
import time and is loaded only when a sweep runs.

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
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from stellarexp import sweeps
from stellarexp.io_utils import file_lock
from stellarexp.tracking.redact import install_log_redaction, redact, redact_text
from stellarexp.tune.journal import repair_journal

log = logging.getLogger("stellarexp.sweep")

HOST, PID, BEAT, REASON = "worker_host", "worker_pid", "heartbeat", "fail_reason"
# a trial killed before it reported is run again once, first: its params enqueued with these
ORIGIN, RETRY_OF, RETRIED = "origin", "retry_of", sweeps.RETRIED_ATTR


@dataclass
class Plan:
    """Everything one Optuna sweep needs, resolved by the sweeper from config and study file."""

    study_name: str
    storage: str | None
    space: dict[str, sweeps.SearchParam]
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


# --------------------------------------------------------------------------------------------
# storage


def _journal_path(spec: str | None) -> Path | None:
    if not spec:
        return sweeps.default_journal()
    if "://" in str(spec):
        return None
    return Path(str(spec)).expanduser().resolve()


def describe_storage(spec: str | None) -> str:
    """The storage as a user passes it to ``optuna-dashboard`` (path, or URL without password).

    This text goes to logs, MLflow tags and the (versioned) results files: never a password.
    """
    path = _journal_path(spec)
    if path is not None:
        return str(path)
    return re.sub(r"(://[^:/@]+:)[^/]*@", r"\1***@", str(spec))


def open_storage(spec: str | None):
    """Open an Optuna storage: a journal file (default or a path) or a database URL."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    path = _journal_path(spec)
    if path is None:
        kwargs = {"connect_args": {"timeout": 60}} if str(spec).startswith("sqlite") else None
        return RDBStorage(str(spec), engine_kwargs=kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = repair_journal(path)  # a torn write must not stop every study in the file
    if report:
        log.warning(report)
    return JournalStorage(JournalFileBackend(str(path)))


# PostgreSQL advisory lock id of the sweeper (any fixed 64-bit number; one per database)
_PG_LOCK_KEY = 0x5354454C4C4152


@contextlib.contextmanager
def _pg_lock(url: str):
    """Hold a PostgreSQL advisory lock: workers on other hosts see it too; released at exit."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
    finally:
        engine.dispose()


def has_ask_lock(spec: str | None) -> bool:
    """True when :func:`ask_lock` really serialises workers on this storage."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return str(spec).startswith("postgresql")
    return _journal_path(spec) is not None or str(spec).startswith(("sqlite:///", "postgresql"))


@contextlib.contextmanager
def ask_lock(spec: str | None):
    """Serialise count-then-ask between workers (journal files, SQLite and PostgreSQL)."""
    path = _journal_path(spec)
    if path is None and str(spec).startswith("postgresql"):
        with _pg_lock(str(spec)):
            yield
        return
    if path is None and str(spec).startswith("sqlite:///"):
        path = Path(str(spec)[len("sqlite:///"):])
    if path is None:
        yield
        return
    # without flock on this platform the block runs unserialised: counting may overshoot
    with file_lock(f"{path}.sweeper-lock"):
        yield


# --------------------------------------------------------------------------------------------
# samplers and pruners


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` (allowed only inside ``optimize``).

    Our loop ends at ``n_trials``, the grid's size unless given.
    """

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(name: str, seed: int | None, space: Mapping[str, sweeps.SearchParam]):
    """Build the sampler ``name`` (tpe, random, gp, cmaes, qmc, grid)."""
    samplers = optuna.samplers
    name = str(name or "tpe").lower()
    if name == "tpe":
        # constant liar: trials of one batch (or of other workers) still running repel new ones
        return samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return samplers.RandomSampler(seed=seed)
    if name == "gp":
        return samplers.GPSampler(seed=seed)
    if name == "qmc":
        return samplers.QMCSampler(seed=seed, scramble=seed is not None)
    if name == "grid":
        return _GridSampler(sweeps.grid_values(space), seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  # Optuna's CMA-ES needs the separate `cmaes` package
        except ImportError:
            raise sweeps.SweepError("sampler=cmaes needs the `cmaes` package (pip install cmaes)") from None
        return samplers.CmaEsSampler(seed=seed)
    raise sweeps.SweepError(f"unknown sampler {name!r}; use tpe, random, gp, cmaes, qmc or grid")


def make_pruner(name: str | None):
    """Build the pruner ``name`` (none, median, percentile, hyperband, halving)."""
    pruners = optuna.pruners
    name = str(name or "none").lower()
    table = {"none": pruners.NopPruner, "median": pruners.MedianPruner,
             "percentile": lambda: pruners.PercentilePruner(25.0),
             "hyperband": pruners.HyperbandPruner, "halving": pruners.SuccessiveHalvingPruner,
             "successive_halving": pruners.SuccessiveHalvingPruner}
    if name not in table:
        raise sweeps.SweepError(f"unknown pruner {name!r}; use {', '.join(table)}")
    return table[name]()


# --------------------------------------------------------------------------------------------
# liveness


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, ValueError):
        return True
    return True


def fail_stale_trials(study, storage, grace_period: float, orphans: bool = False) -> list[int]:
    """Fail RUNNING trials whose worker died or fell silent; return their numbers.

    ``orphans``: the caller holds the ask lock, under which workers ask a trial and record
    its host, pid and first heartbeat (three separate writes); a RUNNING trial missing any of
    them is then one whose worker was killed in between (it would otherwise stay RUNNING, and
    counted, forever).

    A failed trial that was not itself a retry gets one: its params (those it had, if killed
    while they were written) are enqueued (Optuna hands out waiting trials before sampling new
    ones) and it no longer counts towards ``n_trials`` (see :func:`counted_trials`), so an
    enqueued optimum killed mid-run is still evaluated. A retry that dies too stays FAIL and
    counts (a config that kills its worker is not looped on).
    """
    me, now, failed = socket.gethostname(), time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid, beat = t.user_attrs.get(HOST), t.user_attrs.get(PID), t.user_attrs.get(BEAT)
        if orphans and None in (host, pid, beat):
            reason = "its worker died between asking the trial and recording itself"
        elif host is None:
            continue  # not started by this sweeper: leave it alone
        elif host == me and pid is not None and int(pid) != os.getpid() and not _alive(pid):
            reason = f"worker {host}:{pid} died while the trial ran"
        elif beat is not None and now - float(beat) > grace_period:
            reason = f"no heartbeat from {host}:{pid} for {now - float(beat):.0f} s"
        else:
            continue
        try:
            # trial ids are storage-internal; Optuna offers no public handle on another
            # worker's trial, hence the private attribute
            retry = t.user_attrs.get(ORIGIN) != "retry"
            storage.set_trial_user_attr(t._trial_id, REASON, reason)
            if retry:  # before the state change: a finished trial takes no more attributes
                storage.set_trial_user_attr(t._trial_id, RETRIED, True)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except (RuntimeError, ValueError):
            continue  # another worker finished or failed it first
        log.warning("trial %d marked FAIL: %s", t.number, reason)
        failed.append(t.number)
        if retry:
            study.enqueue_trial(dict(t.params), user_attrs={ORIGIN: "retry", RETRY_OF: t.number},
                                skip_if_exists=False)
            log.warning("trial %d will be run again first (its params are enqueued)", t.number)
    return failed


def counted_trials(trials) -> int:
    """Trials that count towards ``n_trials``: finished or running, except killed-and-retried ones."""
    return sum((t.state.is_finished() and not (t.state == TrialState.FAIL and t.user_attrs.get(RETRIED)))
               or t.state == TrialState.RUNNING for t in trials)


class Heartbeat:
    """Stamps the running trials of this worker every ``interval`` seconds (daemon thread)."""

    def __init__(self, interval: float):
        self.interval = max(float(interval), 0.05)
        self._trials: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-heartbeat", daemon=True)
        self._thread.start()

    def watch(self, trials: Sequence) -> None:
        with self._lock:
            self._trials = list(trials)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                trials = list(self._trials)
            for trial in trials:
                with contextlib.suppress(Exception):  # finished meanwhile: nothing to stamp
                    trial.set_user_attr(BEAT, time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# outcomes


def outcome(ret, metric: str | None) -> tuple[TrialState, float | None, str | None]:
    """Turn a Hydra ``JobReturn`` into (state, value, reason)."""
    try:
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


def tell(study, trial, state: TrialState, value: float | None, reason: str | None) -> None:
    """Record one trial's outcome (the reason of a failure as user attribute ``fail_reason``)."""
    if reason:
        trial.set_user_attr(REASON, redact_text(reason))
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
        log.info("trial %d: %s = %.6g  %s", trial.number, "value", value, trial.params)
    else:
        study.tell(trial, state=state)
        log.warning("trial %d: %s%s", trial.number, state.name, f" ({reason})" if reason else "")


# --------------------------------------------------------------------------------------------
# the loop


class ConsecutiveFailures(sweeps.SweepError):
    """Raised when ``max_consecutive_failures`` trials in a row failed."""


def load_or_create(plan: Plan, storage):
    """Open the plan's study (creating it with its metadata when new)."""
    try:
        study = optuna.create_study(study_name=plan.study_name, storage=storage,
                                    direction=plan.direction, load_if_exists=True,
                                    pruner=make_pruner(plan.pruner))
    except ValueError as exc:
        raise sweeps.SweepError(f"study {plan.study_name!r}: {exc}") from None
    if "search_space" not in study.user_attrs:
        for key, value in {**plan.attrs, "search_space": {k: p.expression for k, p in plan.space.items()},
                           "metric": plan.metric, "sampler": plan.sampler, "seed": plan.seed}.items():
            study.set_user_attr(key, redact(value))  # the storage is shared and kept: no secrets
    return study


def run(plan: Plan, sweeper, probe_cfg=None) -> dict | None:
    """Run ``plan`` to ``n_trials`` in batches of ``n_jobs`` through the sweeper's launcher.

    Returns the exported summary (see :func:`stellarexp.sweeps.best_summary`) or ``None``.
    """
    from . import _tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we log each trial ourselves
    install_log_redaction()  # Hydra's launcher logs each job's overrides
    with ask_lock(plan.storage):  # one worker creates the tables, study, trial 0, parent run
        storage = open_storage(plan.storage)
        study = load_or_create(plan, storage)
        if plan.first_trial and not study.get_trials(deepcopy=False):
            study.enqueue_trial(plan.first_trial, user_attrs={"origin": "first_trial"})
        parent = _tracking.ParentRun.open(probe_cfg, study, plan) if plan.mlflow else None
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
            summary = redact(sweeps.best_summary(study, plan.space, plan.base_overrides, plan.metric))
            if summary is not None and plan.results_path is not None:
                summary["storage"] = describe_storage(plan.storage)
                sweeps.write_yaml_atomic(plan.results_path, summary)
            if parent is not None:
                parent.finish(study, summary)
        _report(study, summary, plan)
    return summary


def _job_overrides(plan: Plan, trial, parent) -> list[str]:
    params = [plan.space[k].override(v) for k, v in trial.params.items()]
    extra = [f"hydra.sweeper.trial_number={trial.number}",
             f"hydra.sweeper.study_name={sweeps.quote(plan.study_name)}"]
    if parent is not None:
        extra += parent.trial_overrides(trial.number)
    return [*plan.base_overrides, *params, *extra]


def _run_batch(plan, sweeper, study, asked, parent, heartbeat, job_idx: int, streak: int,
               validate: bool = False) -> int:
    """Launch one batch, tell its outcomes, return the updated run of consecutive failures.

    Job configs are composed up front only when ``validate`` (first batch) or after the launcher
    refused the batch: composing twice per trial would double the per-trial overhead.
    """
    from hydra.errors import HydraException

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
                    tell(study, trial, TrialState.FAIL, None, f"sweep interrupted: {type(exc).__name__}")
            raise
        finally:
            heartbeat.watch([])
    for trial, ret in zip(runnable, results):
        state, value, reason = outcome(ret, plan.metric)
        tell(study, trial, state, value, reason)
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
            tell(study, trial, TrialState.FAIL, None, f"config does not compose: {exc}"[:2000])
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
