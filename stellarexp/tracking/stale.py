"""Runs whose process died: tag every run with its process, end dead ones as KILLED.

A job killed with SIGKILL (or by the out-of-memory killer, or a power cut) never reaches the
``finally`` that ends its MLflow run, so the run would stay RUNNING forever. Every run opened by
:func:`stellarexp.tracking.runs.tracked_run` (and every sweep's parent run) therefore carries
:func:`process_tags`; when the next job starts, :func:`end_dead_runs` ends the RUNNING runs of
this host whose process is gone as KILLED, with the reason in the ``killed_reason`` tag.

Runs of another host cannot be checked from here and are left alone. A recycled pid is told
apart from the original process by its start time (``/proc/<pid>/stat``, Linux).

A job whose run could not be ended in the store (a full disk under the database) leaves the
cause in ``<job folder>/run_failed.json`` (:func:`keep_failure`; the run's ``job_dir`` tag names
the folder); the next job ends that run FAILED with the cause in its ``error`` tag instead of
KILLED.

A killed backbone run can be resumed: :func:`resumable_checkpoint` finds the newest KILLED run
with the same ``config_hash`` tag whose ``last.ckpt`` is still on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from stellarexp.io_utils import write_text_atomic

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, START_TAG = "host", "pid", "pid_start"
REASON_TAG = "killed_reason"
JOB_DIR_TAG = "job_dir"
FAILURE_FILE = "run_failed.json"
HASH_TAG = "config_hash"
# keys that differ between a job and its rerun without changing what it computes
_VOLATILE = ("tracking.parent_run_id", "tracking.tags.", "stage.resume")


def _start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), ``None`` where unknown."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may hold spaces: count fields after its closing parenthesis
    return stat.rsplit(")", 1)[-1].split()[19]


def process_tags() -> dict[str, str]:
    """``host``, ``pid`` and ``pid_start`` of the calling process, as run tags."""
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    start = _start_time(pid)
    if start is not None:
        tags[START_TAG] = start
    return tags


def process_alive(pid, start: str | None = None) -> bool:
    """True when process ``pid`` of this host runs (and, if ``start`` is given, is the same one)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OSError):
        return True  # exists but not ours, or unreadable: do not touch its run
    if start is not None:
        now = _start_time(int(pid))
        if now is not None and now != start:
            return False  # the pid was recycled by another process
    return True


def end_dead_runs(client, experiment_ids: list[str]) -> list[str]:
    """End RUNNING runs of this host whose process is gone as KILLED; return their ids.

    Parameters
    ----------
    client : mlflow.MlflowClient
    experiment_ids : list of str
        Experiments to look in.
    """
    me = socket.gethostname()
    query = f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{me}'"
    ended = []
    for run in client.search_runs(experiment_ids, query, max_results=5000):
        tags = run.data.tags
        pid = tags.get(PID_TAG)
        if pid is None or int(pid) == os.getpid() or process_alive(pid, tags.get(START_TAG)):
            continue
        kept = kept_failure(tags.get(JOB_DIR_TAG), run.info.run_id)
        if kept is not None:
            status, reason = kept.get("status", "FAILED"), str(kept.get("error", ""))[:5000]
            note = {REASON_TAG: f"process {me}:{pid} could not store its end "
                    f"({kept.get('store_error', '?')}); recorded by a later job"}
            if reason:
                note["error"] = reason
        else:
            status, reason = "KILLED", f"process {me}:{pid} ended without closing the run (killed)"
            note = {REASON_TAG: reason}
        try:
            for key, value in note.items():
                client.set_tag(run.info.run_id, key, value)
            client.set_terminated(run.info.run_id, status)
        except Exception as exc:  # noqa: BLE001 - another job may have ended it first
            log.debug("could not end run %s: %s", run.info.run_id, exc)
            continue
        log.warning("MLflow run %s (%s) marked %s: %s", run.info.run_id,
                    run.info.run_name, status, reason)
        ended.append(run.info.run_id)
    return ended


def keep_failure(job_dir, run_id: str, status: str, error: str, store_error: BaseException) -> Path | None:
    """Write why run ``run_id`` ended (``status``, ``error``) to ``<job_dir>/run_failed.json``.

    Called when ending the run in the store failed (``store_error``), so the next job can record
    the cause (:func:`end_dead_runs`). Returns the file, or ``None`` when it could not be written
    either (the log then holds the cause).
    """
    path = Path(job_dir) / FAILURE_FILE
    record = {"run_id": run_id, "status": status, "error": error,
              "store_error": f"{type(store_error).__name__}: {store_error}"[:1000]}
    try:
        write_text_atomic(path, json.dumps(record, indent=1))
    except OSError:
        return None
    return path


def kept_failure(job_dir: str | None, run_id: str) -> dict | None:
    """The record :func:`keep_failure` left for ``run_id`` in ``job_dir``, if any."""
    if not job_dir:
        return None
    try:
        record = json.loads((Path(job_dir) / FAILURE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("run_id") == run_id else None


def config_hash(params: Mapping[str, str]) -> str:
    """Hash of a run's flattened config without the keys a rerun may change (``_VOLATILE``)."""
    kept = {k: v for k, v in params.items() if not k.startswith(_VOLATILE)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def resumable_checkpoint(client, run_id: str, name: str = "last.ckpt") -> tuple[Path, str] | None:
    """``(checkpoint, killed run id)`` of the newest KILLED run with ``run_id``'s config hash.

    The killed run must have recorded its ``checkpoint_dir`` tag, and ``<dir>/<name>`` must
    still exist. ``None`` when there is none.
    """
    run = client.get_run(run_id)
    wanted = run.data.tags.get(HASH_TAG)
    if not wanted:
        return None
    query = f"attributes.status = 'KILLED' and tags.{HASH_TAG} = '{wanted}'"
    for old in client.search_runs([run.info.experiment_id], query, max_results=50,
                                  order_by=["attributes.start_time DESC"]):
        folder = old.data.tags.get("checkpoint_dir")
        if old.info.run_id != run_id and folder and (Path(folder) / name).is_file():
            return Path(folder) / name, old.info.run_id
    return None
