"""One MLflow run per job: tags, flattened params, config artifacts, batched metrics, and a
FAILED status with the traceback when the stage raises.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stellarexp import home as _home

# MLflow's limits (mlflow.utils.validation); fixed here so --help never imports mlflow.
MAX_PARAM_VALUE = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_TAG_VALUE = 8000

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")

# config key -> tag name; the tags every run carries (DESIGN "MLflow records every run")
CONFIG_TAGS = {
    "stage": "stage.name",
    "model": "model.name",
    "data": "data.name",
    "features": "features.name",
    "target": "target",
    "split": "split.name",
    "seed": "seed",
}


def git_commit() -> str:
    """Commit of the source checkout (``-dirty`` appended with local changes), or ``unknown``."""
    root = _home.source_root()
    if root is None or not (root / ".git").exists():
        return "unknown"
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else (sha or "unknown")


def _select(cfg: Mapping, dotted: str):
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def config_tags(cfg: Mapping) -> dict[str, str]:
    """Tags from the resolved config (stage, model, data, features, target, split, seed) plus
    git commit and host. Keys listed in ``stage.skip_tags`` are left out."""
    skip = set(_select(cfg, "stage.skip_tags") or ())
    tags = {}
    for tag, key in CONFIG_TAGS.items():
        value = _select(cfg, key)
        if tag not in skip and value is not None:
            tags[tag] = str(value)
    tags["git_commit"] = git_commit()
    tags["host"] = socket.gethostname()
    for key, value in (_select(cfg, "tracking.tags") or {}).items():
        tags[str(key)] = str(value)
    return tags


def _param_value(value) -> str:
    if value is None:
        text = "null"
    elif isinstance(value, (list, tuple)):
        text = json.dumps(list(value), default=str)
    else:
        text = str(value)
    if len(text) > MAX_PARAM_VALUE:
        text = text[: MAX_PARAM_VALUE - 3] + "..."
    return text


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, str]:
    """Flatten a nested mapping to dotted keys with MLflow-safe string values.

    Lists stay one value (JSON); values over MLflow's 6000 characters are cut with ``...``;
    characters MLflow refuses in keys become ``_``. Empty mappings give no entry.
    """
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = _BAD_KEY_CHARS.sub("_", f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = _param_value(value)
    return out


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i: i + size]


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

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags in batches (values cut to MLflow's limit)."""
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk)

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log params in batches of 100 (MLflow's per-request limit)."""
        from mlflow.entities import Param

        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics in batches (one request per 1000 values); the last values are kept in
        :attr:`metrics` for the job's return value."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items()]
        for chunk in _chunks(items, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)
        self.metrics.update({k: float(v) for k, v in metrics.items()})

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder's content to the run."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write ``text`` to the artifact ``artifact_file`` (e.g. ``report/table.md``)."""
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, path, artifact_path: str = "figures") -> None:
        """Log a saved figure file under ``figures/``."""
        self.log_artifact(path, artifact_path)


def _run_name(cfg: Mapping) -> str:
    explicit = _select(cfg, "stage.run_name")
    if explicit:
        return str(explicit)
    parts = [_select(cfg, k) for k in ("stage.name", "model.name", "features.name", "target")]
    return "-".join(str(p) for p in parts if p is not None)


@contextlib.contextmanager
def tracked_run(cfg: Mapping, output_dir, overrides: list[str] | None = None) -> Iterator[TrackedRun]:
    """Open the job's MLflow run, record config, params and tags, and close it.

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
    """
    import mlflow
    import yaml

    from stellarexp.tracking import store

    tcfg = cfg.get("tracking") or {}
    client = store.connect(tcfg.get("uri"))
    exp_name = tcfg.get("experiment") or store.DEFAULT_EXPERIMENT
    artifact_root = tcfg.get("artifact_root") if store.is_local(mlflow.get_tracking_uri()) else None
    exp_id = store.ensure_experiment(client, exp_name, artifact_root)
    # a sweeper running jobs in-process may hold its own run: ours becomes its child
    run = mlflow.start_run(experiment_id=exp_id, run_name=_run_name(cfg), tags=config_tags(cfg),
                           nested=mlflow.active_run() is not None,
                           parent_run_id=tcfg.get("parent_run_id") or None)
    handle = TrackedRun(client, run.info.run_id, Path(output_dir))
    status = "FAILED"
    try:
        handle.log_params(flatten(cfg))
        handle.log_text(yaml.safe_dump(cfg, sort_keys=False), "config/config.yaml")
        handle.log_text(yaml.safe_dump(list(overrides or []), sort_keys=False), "config/overrides.yaml")
        yield handle
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):
            handle.log_text(traceback.format_exc(), "error/traceback.txt")
            handle.set_tags({"error": f"{type(exc).__name__}: {exc}"[:1000]})
        raise
    finally:
        mlflow.end_run(status=status)
