"""Liveness of trials: who runs them, heartbeats, and failing (then retrying once) trials
whose worker died.

Each asked trial records its worker's host and pid, and a heartbeat thread stamps it every
``heartbeat_interval`` seconds while it runs. A RUNNING trial whose worker process is gone (same
host) or whose stamp is older than ``grace_period`` is failed before the next ask.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence

from optuna.trial import TrialState

from stellarexp.tracking.stale import process_alive
from stellarexp.tune.export import RETRIED_ATTR

log = logging.getLogger("stellarexp.sweep")

HOST, PID, BEAT, REASON = "worker_host", "worker_pid", "heartbeat", "fail_reason"
# a trial killed before it reported is run again once, first: its params enqueued with these
ORIGIN, RETRY_OF, RETRIED = "origin", "retry_of", RETRIED_ATTR


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
        elif host == me and pid is not None and int(pid) != os.getpid() and not process_alive(int(pid)):
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


