"""The handle a stage logs through: params, metrics and tags to one MLflow run in as few
``log_batch`` requests as MLflow allows, and artifacts guarded against a full disk (plus the
silent handle of a DDP worker process)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from stellarexp.tracking.diskfull import guard
from stellarexp.tracking.display import headline_first
from stellarexp.tracking.params import param_value

# MLflow's limits (mlflow.utils.validation); fixed here so --help never imports mlflow.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_TAG_VALUE = 8000


class TrackedRun:
    """Handle on the active MLflow run of a job; every logger of the stage goes through it.

    Parameters
    ----------
    client : mlflow.MlflowClient
    run_id : str
    output_dir : pathlib.Path
        The job's Hydra output directory (files written there can be logged as artifacts).
    """

    def __init__(self, client, run_id: str, output_dir: Path):
        self.client = client
        self.run_id = run_id
        self.output_dir = Path(output_dir)
        self.metrics: dict[str, float] = {}
        self._pending_params: dict[str, Any] = {}

    def _log_batch(self, params: list = (), metrics: list = (), tags: list = ()) -> None:
        """Send params, metrics and tags in as few ``log_batch`` requests as MLflow allows
        (per request: 100 params, 100 tags, 1000 metrics, 1000 in all)."""
        params, metrics, tags = list(params), list(metrics), list(tags)
        while params or metrics or tags:
            p, params = params[:MAX_PARAMS_PER_BATCH], params[MAX_PARAMS_PER_BATCH:]
            t, tags = tags[:MAX_TAGS_PER_BATCH], tags[MAX_TAGS_PER_BATCH:]
            room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(p) - len(t))
            m, metrics = metrics[:room], metrics[room:]
            parts = {"params": p, "metrics": m, "tags": t}
            self.client.log_batch(self.run_id, **{k: v for k, v in parts.items() if v})

    def _params(self, params: Mapping[str, Any]) -> list:
        return [Param(str(k), param_value(v)) for k, v in params.items()]

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags now, in batches (values cut to MLflow's limit)."""
        self._log_batch(tags=[RunTag(str(k), str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()])

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log params now, in batches of 100 (MLflow's per-request limit)."""
        self._log_batch(params=self._params(params))

    def defer_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` with the next metrics (one request for both) or at :meth:`flush`."""
        self._pending_params.update(params)

    def flush(self) -> None:
        """Send the deferred params (the run's end calls this)."""
        pending, self._pending_params = self._pending_params, {}
        self._log_batch(params=self._params(pending))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics (with any deferred params) in as few requests as MLflow allows; the
        last values are kept in :attr:`metrics` for the job's return value."""
        now = int(time.time() * 1000)
        # the paper's sigmas first: MLflow's compare page plots the first metric a run logged
        items = [Metric(str(k), float(metrics[k]), now, int(step)) for k in headline_first(metrics)]
        pending, self._pending_params = self._pending_params, {}
        self._log_batch(params=self._params(pending), metrics=items)
        self.metrics.update({k: float(v) for k, v in metrics.items()})

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder's content to the run."""
        # a full disk: a clear error and no truncated file in the store
        path = Path(path)
        if path.is_dir():
            with guard(self.client, self.run_id, artifact_path or "", path):
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            with guard(self.client, self.run_id, f"{artifact_path or ''}/{path.name}".lstrip("/"),
                       path):
                self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write ``text`` to the artifact ``artifact_file`` (e.g. ``report/table.md``)."""
        with guard(self.client, self.run_id, artifact_file):
            self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, path, artifact_path: str = "figures") -> None:
        """Log a saved figure file under ``figures/``."""
        self.log_artifact(path, artifact_path)


class WorkerRun(TrackedRun):
    """The run handle of a non-zero-rank process of a multi-process (DDP) job: logs nothing.

    Lightning's DDP starts one process per device by re-running the command; only rank 0 owns
    the MLflow run, so the job has one run and not one per device. Reading (``client``) works.
    """

    def _log_batch(self, params: list = (), metrics: list = (), tags: list = ()) -> None:
        return None

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        return None

    def log_text(self, text: str, artifact_file: str) -> None:
        return None


def process_rank() -> int:
    """This process's global rank in a distributed launch (0 when not distributed).

    Lightning's process launcher and torchrun set ``RANK``/``LOCAL_RANK`` (and ``NODE_RANK``
    across nodes). SLURM task ids are not read: several SLURM tasks may be independent sweep
    workers, each owning its run.
    """
    if os.environ.get("RANK", "").isdigit():
        return int(os.environ["RANK"])
    return int(os.environ.get("LOCAL_RANK", "0") or 0) + int(os.environ.get("NODE_RANK", "0") or 0)
