"""One MLflow run per job: tags, flattened params, config artifacts, batched metrics, and a
FAILED status with the traceback when the stage raises.

A job's run costs few store requests (a sweep runs many small jobs, each its own run): the tags
go with the run's creation, the params wait for the first metrics and go with them in one
``log_batch``, and what does not change between the jobs of a process (the git commit, the
experiment's id, a validated parent run) is looked up once per process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import subprocess
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stellarexp import home as _home
from stellarexp.constants import BANDS

# MLflow's limits (mlflow.utils.validation); fixed here so --help never imports mlflow.
MAX_PARAM_VALUE = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
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


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Commit of the source checkout (``-dirty`` appended with local changes), or ``unknown``.

    Looked up once per process (two ``git`` subprocesses): the code a process runs is the code
    it started with.
    """
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


# Config keys not logged as params: the table of every survey size (``data.size`` names the one
# used, and the full config is logged as ``config/config.yaml``). With per-band settings logged
# as one param each (below), a run's params stay under MLflow's 100 per request and the runs
# table shows what defines the run.
PARAM_SKIP_PREFIXES: tuple[str, ...] = ("data.sizes.",)


def run_params(cfg: Mapping) -> dict[str, str]:
    """The params a run logs: the flattened config without :data:`PARAM_SKIP_PREFIXES` keys, and
    a setting given per SDSS band (keys ``u, g, r, i, z``) as one JSON param."""
    flat = {k: v for k, v in flatten(cfg).items() if not k.startswith(PARAM_SKIP_PREFIXES)}
    stems = {k.rsplit(".", 1)[0] for k in flat if "." in k}
    for stem in sorted(stems):
        keys = [f"{stem}.{b}" for b in BANDS]
        if all(k in flat for k in keys) and not any(k.startswith(f"{stem}.") and k not in keys for k in flat):
            flat[stem] = json.dumps({b: _json_number(flat.pop(f"{stem}.{b}")) for b in BANDS})
    return flat


def _json_number(text: str):
    try:
        return json.loads(text)
    except ValueError:
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
        from mlflow.entities import Param

        return [Param(str(k), _param_value(v)) for k, v in params.items()]

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags now, in batches (values cut to MLflow's limit)."""
        from mlflow.entities import RunTag

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
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items()]
        pending, self._pending_params = self._pending_params, {}
        self._log_batch(params=self._params(pending), metrics=items)
        self.metrics.update({k: float(v) for k, v in metrics.items()})

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder's content to the run."""
        # a full disk: a clear error and no truncated file in the store
        from stellarexp.tracking.diskfull import guard

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
        from stellarexp.tracking.diskfull import guard

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


def job_config_hash(cfg: Mapping) -> str:
    """The ``config_hash`` tag of a job: its config without volatile keys plus its data fingerprint.

    Two jobs with one hash compute the same thing on the same data, so ``stellarexp.reproduce``
    reuses a FINISHED run instead of running the job again.
    """
    from stellarexp.tracking import redact, stale

    fingerprint = None
    if isinstance(cfg.get("data"), Mapping):
        with contextlib.suppress(Exception):  # no dataset yet: the hash says so (None)
            from omegaconf import OmegaConf

            from stellarexp.data.fingerprint import data_fingerprint

            fingerprint = data_fingerprint(OmegaConf.create(dict(cfg["data"])))
    params = home_relative(flatten(redact.redact(dict(cfg))))
    return stale.config_hash({**params, "data_fingerprint": str(fingerprint)})


def home_relative(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the home folder in string values written ``$STELLAREXP_HOME``, so a
    copied or moved home gives its jobs the hashes they had."""
    pattern = re.compile(re.escape(str(_home.home())) + r"(?=/|$|[^\w.-])")
    return {k: pattern.sub("$STELLAREXP_HOME", v) if isinstance(v, str) else v for k, v in params.items()}


# per process: (tracking URI, experiment, artifact root) -> experiment id; parent runs found
_EXPERIMENTS: dict[tuple[str, str, str], str] = {}
_PARENTS: set[tuple[str, str]] = set()


def _experiment_id(client, name: str, artifact_root, *, fresh: bool = False) -> tuple[str, bool]:
    """``(id, from_cache)`` of experiment ``name`` (:func:`store.ensure_experiment` once per
    process; ``fresh`` looks again, restoring an experiment deleted meanwhile)."""
    from stellarexp.tracking import store

    key = (str(client.tracking_uri), str(name), str(artifact_root))
    if not fresh and key in _EXPERIMENTS:
        return _EXPERIMENTS[key], True
    _EXPERIMENTS[key] = store.ensure_experiment(client, name, artifact_root)
    return _EXPERIMENTS[key], False


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

    Notes
    -----
    ``tracking.config_artifacts: false`` (set by the sweeper for its trials) leaves out the two
    config artifacts: the params hold the config, the ``overrides`` tag the command line. The
    params are sent with the stage's first metrics (or at the end), in one request.
    """
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from stellarexp.tracking import redact, stale, store

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
    params = run_params(safe_cfg)
    tags = {**config_tags(safe_cfg), **stale.process_tags(), stale.HASH_TAG: job_config_hash(cfg),
            stale.JOB_DIR_TAG: str(Path(output_dir).resolve())}
    safe_overrides = [redact.redact_override(o) for o in overrides or []]
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
        run = mlflow.start_run(experiment_id=exp_id, run_name=_run_name(cfg), tags=tags,
                               nested=nested, parent_run_id=parent)
    except MlflowException:
        if not cached:
            raise
        # the experiment was deleted since this process looked it up: restore it, once
        exp_id, _ = _experiment_id(client, exp_name, artifact_root, fresh=True)
        run = mlflow.start_run(experiment_id=exp_id, run_name=_run_name(cfg), tags=tags,
                               nested=nested, parent_run_id=parent)
    if parent:
        _PARENTS.add((client.tracking_uri, parent))
    handle = TrackedRun(client, run.info.run_id, Path(output_dir))
    os.environ["STELLAREXP_RUN_ID"] = run.info.run_id  # inherited by DDP worker processes
    status, error = "FAILED", ""
    try:
        handle.defer_params(params)
        if config_artifacts:
            handle.log_text(yaml.safe_dump(safe_cfg, sort_keys=False), "config/config.yaml")
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
    import logging

    import mlflow

    from stellarexp.tracking import stale

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
