"""The sweep benchmark's measurements: trial times read from the Optuna journal and the times
file, summarised as the per-trial overhead of one worker and the throughput of several."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrialTimes:
    """Ask and tell times (epoch seconds) of one trial, as the Optuna storage recorded them."""

    number: int
    start: float
    complete: float | None
    state: str
    worker: str = ""


def read_trials(journal: Path) -> list[TrialTimes]:
    """Every trial of the single study in an Optuna journal file.

    Parameters
    ----------
    journal : Path
        The journal file (``hydra.sweeper.storage``) of one study.

    Returns
    -------
    list of TrialTimes
        One per trial, in the storage's order, with the ``worker_pid`` user attribute as worker.

    Raises
    ------
    RuntimeError
        When the journal holds no study or more than one.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    names = optuna.get_all_study_names(storage)
    if len(names) != 1:
        raise RuntimeError(f"{journal}: expected one study, found {names}")
    study = optuna.load_study(study_name=names[0], storage=storage)
    return [TrialTimes(t.number, t.datetime_start.timestamp(),
                       t.datetime_complete.timestamp() if t.datetime_complete else None,
                       t.state.name, str(t.user_attrs.get("worker_pid", "")))
            for t in study.get_trials(deepcopy=False)]


def read_times(path: Path) -> dict[str, dict[int, float]]:
    """Read the times file the instrumented sweep appends to (``<trial> <kind> <seconds>`` lines).

    Parameters
    ----------
    path : Path
        The times file; a missing file reads as no times.

    Returns
    -------
    dict
        Kind (objective, compose, job, task, their ``_cpu`` twins, ``*_at`` clock stamps) ->
        trial number -> seconds.
    """
    out: dict[str, dict[int, float]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            number, kind, seconds = line.split()
            # a part called twice for one trial (never expected) counts in full; a stamp is
            # a clock reading, the last one is kept
            bucket = out.setdefault(kind, {})
            before = 0.0 if kind.endswith("_at") else bucket.get(int(number), 0.0)
            bucket[int(number)] = before + float(seconds)
    return out


def _quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values``, linear between the two nearest ranks."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def overhead_stats(trials: Iterable[TrialTimes], times: dict[str, dict[int, float]]) -> dict:
    """Per-trial overhead of a one-worker study (see :mod:`stellarexp.benches.sweep`).

    Parameters
    ----------
    trials : iterable of TrialTimes
        All trials of the study; every one must be COMPLETE.
    times : dict
        :func:`read_times`: ``objective`` (required) and, when instrumented, ``compose``,
        ``job`` and ``task`` seconds per trial (wall clock; ``<kind>_cpu``: CPU seconds).

    Returns
    -------
    dict
        ``n`` (trials measured, the first one excluded), ``median``, ``p90``, ``max`` of the
        overhead, the medians of its ``in_trial`` and ``between`` parts and of ``objective``,
        and ``parts`` (medians of ``compose``, ``hydra_job``, ``train_run`` and
        ``sweeper_storage``; empty without the instrumentation). Medians of parts need not add
        up to the median of the whole. With the objective's CPU stamps (``cpu_at``,
        ``children_cpu_at``, ``objective_cpu``) also ``cpu``, the median CPU seconds of the
        sweeping process per cycle (its objective's CPU left out), and ``children_cpu``, those
        of the child processes it waited for (``None`` without the stamps); ``parts_cpu``, the
        parts in CPU seconds (with the ``<part>_cpu`` times and ``launched_cpu_at`` stamps).
    """
    trials = list(trials)
    bad = [t.number for t in trials if t.state != "COMPLETE"]
    if bad:
        raise RuntimeError(f"trials {bad} of the trivial objective did not complete")
    done = sorted(trials, key=lambda t: t.complete)
    if len(done) < 2:
        raise RuntimeError("need at least two completed trials to measure a cycle")
    objective_s = times.get("objective", {})
    overhead, inside, between, objective = [], [], [], []
    parts: dict[str, list[float]] = {"compose": [], "hydra_job": [], "train_run": [],
                                     "sweeper_storage": []}
    instrumented = all(k in times for k in ("compose", "job", "task"))
    cpu_at, children_at = times.get("cpu_at", {}), times.get("children_cpu_at", {})
    objective_cpu = times.get("objective_cpu", {})
    cpu, children_cpu = [], []
    parts_cpu: dict[str, list[float]] = {k: [] for k in parts}
    launched_at = times.get("launched_cpu_at", {})
    cpu_parts = all(f"{k}_cpu" in times for k in ("compose", "job", "task"))
    for prev, cur in itertools.pairwise(done):
        if cur.number not in objective_s:
            raise RuntimeError(f"trial {cur.number}: the objective recorded no time")
        obj = objective_s[cur.number]
        cycle = cur.complete - prev.complete
        overhead.append(cycle - obj)
        inside.append(cur.complete - cur.start - obj)
        between.append(cur.start - prev.complete)
        objective.append(obj)
        if all(n in d for n in (prev.number, cur.number) for d in (cpu_at, children_at)):
            # stamps at the start of consecutive objectives: one whole cycle, which holds the
            # previous trial's objective
            cpu.append(cpu_at[cur.number] - cpu_at[prev.number]
                       - objective_cpu.get(prev.number, 0.0))
            children_cpu.append(children_at[cur.number] - children_at[prev.number])
        if instrumented and all(cur.number in times[k] for k in ("compose", "job", "task")):
            compose, job, task = (times[k][cur.number] for k in ("compose", "job", "task"))
            parts["compose"].append(compose)         # the job's config from the overrides
            parts["hydra_job"].append(job - task)    # output dir, .hydra files, logging
            parts["train_run"].append(task - obj)    # config resolution + the MLflow run
            parts["sweeper_storage"].append(cycle - compose - job)  # lock, ask, tell, sampler
        if cpu_parts and all(n in launched_at for n in (prev.number, cur.number)) \
                and all(cur.number in times[f"{k}_cpu"] for k in ("compose", "job", "task")):
            # the same split in CPU seconds, over the cycle from one launch's end to the next
            compose, job, task = (times[f"{k}_cpu"][cur.number] for k in ("compose", "job", "task"))
            parts_cpu["compose"].append(compose)
            parts_cpu["hydra_job"].append(job - task)
            parts_cpu["train_run"].append(task - objective_cpu.get(cur.number, 0.0))
            parts_cpu["sweeper_storage"].append(
                launched_at[cur.number] - launched_at[prev.number] - compose - job)
    return {"n": len(overhead), "median": statistics.median(overhead),
            "p90": _quantile(overhead, 0.9), "max": max(overhead),
            "in_trial": statistics.median(inside), "between": statistics.median(between),
            "objective": statistics.median(objective),
            "cpu": statistics.median(cpu) if cpu else None,
            "children_cpu": statistics.median(children_cpu) if children_cpu else None,
            "parts": {k: statistics.median(v) for k, v in parts.items() if v},
            "parts_cpu": {k: statistics.median(v) for k, v in parts_cpu.items() if v}}


def trials_per_minute(trials: Iterable[TrialTimes]) -> float:
    """Steady throughput of a study: completions per minute once every worker has warmed up.

    Each worker's first completion carries its warm-up (imports, first composition), so the
    window opens at the LAST of the workers' first completions and closes at the final
    completion; the rate is the completions inside it (after its opening) per minute. Workers
    run side by side, so this adds their rates without needing each worker to finish two
    trials (under load one worker may start late and get a single trial).

    Parameters
    ----------
    trials : iterable of TrialTimes
        All trials of the study, of every worker; those not COMPLETE are ignored.

    Returns
    -------
    float
        Trials per minute; NaN when nothing completes after the window opens.
    """
    firsts: dict[str, float] = {}
    ends: list[float] = []
    for t in trials:
        if t.state == "COMPLETE" and t.complete is not None:
            ends.append(t.complete)
            firsts[t.worker] = min(firsts.get(t.worker, math.inf), t.complete)
    if not firsts:
        return math.nan
    opened = max(firsts.values())
    after = [e for e in ends if e > opened]
    if not after:
        return math.nan
    return 60.0 * len(after) / (max(after) - opened)
