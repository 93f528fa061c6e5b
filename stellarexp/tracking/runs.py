"""The MLflow run of one job, from open to end: tags, params and config artifacts recorded, and
a FAILED status with the traceback when the stage raises.

A job's run costs few store requests (a sweep runs many small jobs, each its own run): the tags
go with the run's creation, the params wait for the first metrics and go with them in one
``log_batch`` (:class:`~stellarexp.tracking.run_handle.TrackedRun`), and what does not change
between the jobs of a process (the git commit, the experiment's id, a validated parent run) is
looked up once per process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from stellarexp.tracking import redact, stale, store
from stellarexp.tracking.display import run_name
from stellarexp.tracking.job_identity import config_tags, job_config_hash
from stellarexp.tracking.params import run_params
from stellarexp.tracking.run_handle import MAX_TAG_VALUE, TrackedRun, WorkerRun, process_rank

# per process: (tracking URI, experiment, artifact root) -> experiment id; parent runs found
_EXPERIMENTS: dict[tuple[str, str, str], str] = {}
_PARENTS: set[tuple[str, str]] = set()


def _experiment_id(client, name: str, artifact_root, *, fresh: bool = False) -> tuple[str, bool]:
    """``(id, from_cache)`` of experiment ``name`` (:func:`store.ensure_experiment` once per
    process; ``fresh`` looks again, restoring an experiment deleted meanwhile)."""
    key = (str(client.tracking_uri), str(name), str(artifact_root))
    if not fresh and key in _EXPERIMENTS:
        return _EXPERIMENTS[key], True
    _EXPERIMENTS[key] = store.ensure_experiment(client, name, artifact_root)
    return _EXPERIMENTS[key], False


@contextlib.contextmanager
def tracked_run(cfg: Mapping, output_dir, overrides: list[str] | None = None) -> Iterator[TrackedRun]:
    """Open the job's MLflow run, record config, params (:func:`~stellarexp.tracking.params.run_params`)
    and tags, and close it.

    The run ends FINISHED when the block completes, KILLED on ``KeyboardInterrupt`` and FAILED
    on any other exception, with the traceback logged as ``error/traceback.txt`` and the error
    in the ``error`` tag; the exception is re-raised.

    Parameters
    ----------
    cfg : mapping
        The job's resolved config (a plain dict without the ``hydra`` node).
    output_dir : path-like
        Hydra's output directory of the job.
    overrides : list of str, optional
        The job's command-line overrides (logged as ``config/overrides.yaml``).

    Notes
    -----
    ``config/config.yaml`` (the whole resolved config) is logged for every run;
    ``tracking.config_artifacts: false`` (set by the sweeper for its trials) leaves out
    ``config/overrides.yaml`` and puts the command line in the ``overrides`` tag. The params are
    sent with the stage's first metrics (or at the end), in one request.
    """
    tcfg = cfg.get("tracking") or {}
    client = store.connect(tcfg.get("uri"))
    if process_rank() > 0:
        # DDP worker: rank 0 owns the job's run (see WorkerRun)
        yield WorkerRun(client, os.environ.get("STELLAREXP_RUN_ID", ""), Path(output_dir))
        return
    exp_name = tcfg.get("experiment") or store.DEFAULT_EXPERIMENT
    artifact_root = tcfg.get("artifact_root") if store.is_local(mlflow.get_tracking_uri()) else None
    exp_id, cached = _experiment_id(client, exp_name, artifact_root)
    # runs of jobs killed with SIGKILL never ended: end them KILLED (stellarexp.tracking.stale)
    with contextlib.suppress(Exception):
        stale.end_dead_runs(client, [exp_id])
    # credentials never reach params, tags or artifacts (stellarexp.tracking.redact)
    safe_cfg = redact.redact(dict(cfg))
    safe_overrides = [redact.redact_override(o) for o in overrides or []]
    params = run_params(safe_cfg, safe_overrides)
    tags = {**config_tags(safe_cfg), **stale.process_tags(), stale.HASH_TAG: job_config_hash(cfg),
            stale.JOB_DIR_TAG: str(Path(output_dir).resolve())}
    config_artifacts = bool(tcfg.get("config_artifacts", True))
    if not config_artifacts:
        tags["overrides"] = " ".join(safe_overrides)[:MAX_TAG_VALUE]
    # a sweeper running jobs in-process may hold its own run: ours becomes its child
    nested = mlflow.active_run() is not None
    parent = tcfg.get("parent_run_id") or None
    if parent and not nested and (client.tracking_uri, parent) in _PARENTS:
        tags[MLFLOW_PARENT_RUN_ID] = parent  # mlflow checked it for an earlier job: skip that
        parent = None
    try:
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name(cfg), tags=tags,
                               nested=nested, parent_run_id=parent)
    except MlflowException:
        if not cached:
            raise
        # the experiment was deleted since this process looked it up: restore it, once
        exp_id, _ = _experiment_id(client, exp_name, artifact_root, fresh=True)
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name(cfg), tags=tags,
                               nested=nested, parent_run_id=parent)
    if parent:
        _PARENTS.add((client.tracking_uri, parent))
    handle = TrackedRun(client, run.info.run_id, Path(output_dir))
    os.environ["STELLAREXP_RUN_ID"] = run.info.run_id  # inherited by DDP worker processes
    status, error = "FAILED", ""
    try:
        handle.defer_params(params)
        # the params are a few keys: the whole config is this file, for every run
        handle.log_text(yaml.safe_dump(safe_cfg, sort_keys=False), "config/config.yaml")
        if config_artifacts:
            handle.log_text(yaml.safe_dump(safe_overrides, sort_keys=False),
                            "config/overrides.yaml")
        yield handle
        handle.flush()
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException as exc:
        error = redact.redact_text(f"{type(exc).__name__}: {exc}")[:1000]
        with contextlib.suppress(Exception):
            handle.set_tags({"error": error})
        with contextlib.suppress(Exception):  # fails too when the disk is full
            handle.log_text(traceback.format_exc(), "error/traceback.txt")
        raise
    finally:
        with contextlib.suppress(Exception):  # the params of a failed or killed job
            handle.flush()
        _end_run(run.info.run_id, status, error, Path(output_dir))


def _end_run(run_id: str, status: str, error: str, output_dir: Path) -> None:
    """End the active run; when the store cannot take it (a full disk under the database), keep
    the cause beside the job for the next job to record (stellarexp.tracking.stale)."""
    try:
        mlflow.end_run(status=status)
    except Exception as exc:
        finished = status == "FINISHED"
        if finished:
            status, error = "FAILED", f"the job finished but its run could not be ended in the store: {exc}"
        kept = stale.keep_failure(output_dir, run_id, status, error, exc)
        logging.getLogger(__name__).error(
            "could not end MLflow run %s as %s in the store (%s: %s); %s", run_id, status,
            type(exc).__name__, exc, f"the cause is kept in {kept} and the next job records it"
            if kept else "the cause could not be written either (free space on the disk)")
        if finished:  # else the job's own exception is on its way up
            raise
