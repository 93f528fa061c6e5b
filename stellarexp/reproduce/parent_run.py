"""The reproduce's MLflow parent run: created, or reopened for a plan that did not finish; each
step's result recorded on it; the report linked into its description; ended with the totals."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import yaml
from mlflow.entities import Metric
from omegaconf import OmegaConf

from stellarexp.reproduce.plan import ReproduceError
from stellarexp.reproduce.summary import StepResult, steps_markdown
from stellarexp.tracking import stale
from stellarexp.tracking.redact import redact, redact_text

log = logging.getLogger("stellarexp.reproduce")

PARENT_STAGE = "reproduce"
PLAN_TAG = "reproduce_plan"


def plan_hash(cfg) -> str:
    """Hash of what the experiment computes (not of dry_run/rerun/tracking/progress)."""
    keep = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k])
            else cfg[k] for k in ("experiment", "tune", "tune_trials") if k in cfg}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_parent(client, experiment_id: str, cfg, name: str, trainer: str) -> tuple[str, bool]:
    """Create the parent run, or reopen the unfinished one of this plan.

    Parameters
    ----------
    client : mlflow.MlflowClient
    experiment_id : str
    cfg : omegaconf.DictConfig
        The composed ``stellarexp/conf/reproduce.yaml`` (its plan is hashed, a new run logs it).
    name : str
        The experiment's name.
    trainer : str
        The trainer the image steps use (tagged).

    Returns
    -------
    tuple of (str, bool)
        The parent run's id, and whether it was reopened.

    Raises
    ------
    ReproduceError
        When the plan's unfinished run belongs to a process that is still alive on this host.
    """
    digest = plan_hash(cfg)
    query = f"tags.stage = '{PARENT_STAGE}' and tags.{PLAN_TAG} = '{digest}'"
    old = client.search_runs([experiment_id], query, max_results=1,
                             order_by=["attributes.start_time DESC"])
    tags = {"stage": PARENT_STAGE, PLAN_TAG: digest, "reproduce.experiment": name,
            "trainer": trainer, "tune": str(bool(cfg.get("tune"))), **stale.process_tags()}
    if old and old[0].info.status != "FINISHED":
        run = old[0]
        pid = run.data.tags.get(stale.PID_TAG)
        if (run.info.status == "RUNNING" and pid and run.data.tags.get(stale.HOST_TAG)
                == tags[stale.HOST_TAG] and stale.process_alive(pid, run.data.tags.get(
                    stale.START_TAG))):
            raise ReproduceError(f"this experiment is already running in process {pid} "
                                 f"(MLflow run {run.info.run_id}); wait for it or stop it")
        parent_id = run.info.run_id
        client.update_run(parent_id, status="RUNNING")
        for key, value in tags.items():
            client.set_tag(parent_id, key, value)
        log.info("resuming reproduce run %s (was %s)", parent_id, run.info.status)
        return parent_id, True
    run = client.create_run(experiment_id, run_name=f"reproduce {name}", tags=tags)
    parent_id = run.info.run_id
    client.log_text(parent_id, yaml.safe_dump(
        redact(OmegaConf.to_container(cfg, resolve=True)), sort_keys=False),
        "config/reproduce.yaml")
    return parent_id, False


def record_step(client, parent_id: str, result: StepResult,
                results: Mapping[str, StepResult]) -> None:
    """Tag the step's run on the parent run and rewrite its step table (Markdown and JSON).

    Parameters
    ----------
    client : mlflow.MlflowClient
    parent_id : str
    result : StepResult
        The step just done.
    results : mapping
        Step name -> result of every step so far, ``result`` included.
    """
    if result.run_id:
        client.set_tag(parent_id, f"step.{result.step}", result.run_id)
    client.log_text(parent_id, redact_text(steps_markdown(results.values())), "reproduce/steps.md")
    client.log_text(parent_id, json.dumps(redact([asdict(r) for r in results.values()]),
                                          indent=2), "reproduce/steps.json")


def end_parent(client, parent_id: str, results: Mapping[str, StepResult], status: str,
               error: str | None = None) -> None:
    """End the parent run with ``status``, the steps' totals as metrics and ``error`` as a tag.

    Parameters
    ----------
    client : mlflow.MlflowClient
    parent_id : str
    results : mapping
        Step name -> result of every step done.
    status : str
        ``FINISHED``, ``FAILED`` or ``KILLED``.
    error : str, optional
        What failed (redacted and cut to 1000 characters).
    """
    total = sum(r.seconds for r in results.values())
    ran = sum(r.status == "ran" for r in results.values())
    reused = sum(r.status == "reused" for r in results.values())
    now = int(time.time() * 1000)
    client.log_batch(parent_id, metrics=[
        Metric("reproduce/step_seconds", total, now, 0),
        Metric("reproduce/steps_ran", ran, now, 0),
        Metric("reproduce/steps_reused", reused, now, 0)])
    if error:
        client.set_tag(parent_id, "error", redact_text(error)[:1000])
    client.set_terminated(parent_id, status)


@contextlib.contextmanager
def _quiet_downloads():
    """No MLflow download progress bar in the middle of the printed summary."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def link_report(client, parent_id: str, report_run_id: str,
                describe: Callable[[str], str]) -> str | None:
    """Copy the report's table onto the parent run (artifact, description); return it.

    Parameters
    ----------
    client : mlflow.MlflowClient
    parent_id : str
    report_run_id : str
        The run of the report step (tagged ``report_run_id`` even when its table is unreadable).
    describe : callable
        The report's Markdown -> the parent run's description.

    Returns
    -------
    str or None
        The report's Markdown, or ``None`` when it could not be read.
    """
    client.set_tag(parent_id, "report_run_id", report_run_id)
    try:
        with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
            path = client.download_artifacts(report_run_id, "comparison/comparison.md", tmp)
            text = Path(path).read_text()
    except Exception as exc:  # noqa: BLE001 - the report run itself is still linked
        log.warning("could not read the report of run %s: %s", report_run_id, exc)
        return None
    client.log_text(parent_id, redact_text(text), "report/comparison.md")
    client.set_tag(parent_id, "mlflow.note.content", redact_text(describe(text)))
    return text
