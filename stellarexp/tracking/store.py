"""Where runs are stored: tracking URI resolution and experiments with absolute artifact roots.

Default ("embedded") store: ``sqlite:///$STELLAREXP_HOME/mlruns/mlflow.db`` with artifacts under
``$STELLAREXP_HOME/mlruns/artifacts/<experiment>``; any other SQLite database keeps its
artifacts beside it (``<folder>/artifacts``). A store that was copied or moved is pointed at its
new folder when it is opened (:mod:`stellarexp.tracking.relocate`). MLflow's own default (``./mlflow.db`` and
``./mlruns`` in the working directory) would scatter runs over every directory a command is
started from, so the URI is always set explicitly and every experiment we create gets an absolute
artifact location. Every experiment stellarexp uses gets a saved view of its runs table
(:mod:`stellarexp.tracking.display`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from stellarexp import home as _home
from stellarexp.tracking import display
from stellarexp.tracking.relocate import relocate

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "stellarexp"


def default_uri() -> str:
    """``sqlite:///<home>/mlruns/mlflow.db`` (absolute path, so four slashes on POSIX)."""
    return f"sqlite:///{_home.mlruns_dir() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    """``$STELLAREXP_HOME/mlruns/artifacts``."""
    return _home.mlruns_dir() / "artifacts"


def resolve_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else the default."""
    if uri:
        return str(uri)
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def is_local(uri: str) -> bool:
    """True for stores whose artifacts we place ourselves (SQLite database or file store)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


_WAL_DONE: set[str] = set()


def prepare_local(uri: str) -> None:
    """Create a SQLite store's folder, switch it to WAL, point a moved store at its folder."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        _use_wal(path)
        _relocate_once(path)


_RELOCATED: set[str] = set()


def _relocate_once(db: Path) -> None:
    """Point a copied or moved store's recorded locations at its folder (once per process)."""
    key = str(db)
    if key in _RELOCATED:
        return
    default = db.resolve() == (_home.mlruns_dir() / "mlflow.db").resolve()
    try:
        relocate(db, _home.home() if default else None)
    except (OSError, sqlite3.Error) as exc:  # a read-only or busy store still opens
        log.warning("could not check whether the tracking store %s was moved (%s); stored artifact "
                    "locations are used as they are", db, exc)
    _RELOCATED.add(key)


def sqlite_artifact_root(uri: str) -> Path | None:
    """``<folder of the database>/artifacts`` for a SQLite URI, else ``None``."""
    if not str(uri).startswith("sqlite:///"):
        return None
    return Path(str(uri)[len("sqlite:///"):]).resolve().parent / "artifacts"


def _use_wal(path: Path) -> None:
    """Switch the SQLite store to write-ahead logging (once per process and file).

    WAL lets readers (the UI, other workers) go on while a run is written and commits with far
    fewer disk syncs: a sweep's child run costs about half the wall time. The mode is stored in
    the database file, so every later connection (MLflow's own included) uses it. Best effort: a
    database busy in another process keeps its mode and is switched by a later call.
    """
    key = str(path)
    if key in _WAL_DONE:
        return
    with contextlib.suppress(sqlite3.Error):
        con = sqlite3.connect(key, timeout=5)
        try:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode and str(mode[0]).lower() == "wal":
                _WAL_DONE.add(key)
        finally:
            con.close()


def connect(uri: str | None = None):
    """Point mlflow at the resolved URI and return an ``MlflowClient`` for it."""
    uri = resolve_uri(uri)
    if is_local(uri):
        prepare_local(uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def _now_ms() -> int:
    return int(time.time() * 1000)


def add_runs_view(client, experiment) -> bool:
    """Give ``experiment`` the saved runs-table view (:data:`stellarexp.tracking.display.VIEW_TAG`)
    when it has none; one kept (perhaps changed in the UI) stays. Returns whether it was added.

    Best effort: a store that refuses the tag (read-only, no permission) is logged, not raised.
    """
    if display.VIEW_TAG in (experiment.tags or {}):
        return False
    try:
        client.set_experiment_tag(experiment.experiment_id, display.VIEW_TAG,
                                  display.view_tag_value(_now_ms()))
    except Exception as exc:  # noqa: BLE001 - the view is a convenience
        log.warning("could not add the runs-table view to experiment %s (%s)",
                    experiment.name, exc)
        return False
    return True


def _safe_dir_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "experiment"


def ensure_experiment(client, name: str = DEFAULT_EXPERIMENT, artifact_root: str | os.PathLike | None = None) -> str:
    """Return the id of experiment ``name``, creating (or restoring) it when needed.

    Parameters
    ----------
    client : mlflow.MlflowClient
    name : str
        Experiment name.
    artifact_root : path-like, optional
        Folder under which a new experiment stores artifacts (``<root>/<name>``, absolute).
        ``None``: beside a SQLite database (``<its folder>/artifacts``), so a store moves with
        its artifacts; for a tracking server, where the server puts them.
    """
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        add_runs_view(client, exp)
        return exp.experiment_id
    location = None
    artifact_root = artifact_root or sqlite_artifact_root(client.tracking_uri)
    if artifact_root:
        location = (Path(artifact_root).expanduser().resolve() / _safe_dir_name(name)).as_uri()
    try:
        # the MLflow 3 UI opens experiments of this kind on their runs table (not the GenAI page)
        return client.create_experiment(name, artifact_location=location,
                                        tags={"mlflow.experimentKind": "custom_model_development",
                                              display.VIEW_TAG: display.view_tag_value(_now_ms())})
    except MlflowException:
        # another process created it between our lookup and create
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id
