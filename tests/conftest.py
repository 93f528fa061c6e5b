"""Shared fixtures: the tiny synthetic survey and its dataset (built once per test session; with
pytest-xdist the workers share one copy through a file lock in the common base temp dir), a
temporary STELLAREXP_HOME with its own MLflow store, and a tiny trained, packaged image model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support import packaged
from tests.support.train import migrated_db, run_job

TESTS_DATA = Path(__file__).parent / "data"


def _shared_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # xdist: every worker's basetemp is a child of one session directory
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _sources_key() -> str:
    """Hash of everything the tiny survey is built from (data code, data configs, resources)."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for pattern in ("stellarexp/data/**/*.py", "stellarexp/survey/**/*.py", "stellarexp/sdss/**/*.py",
                    "stellarexp/conf/data/**/*.yaml", "stellarexp/conf/data_cli.yaml",
                    "stellarexp/resources/**/*"):
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                digest.update(path.relative_to(root).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _build_tiny(home: Path) -> dict:
    from stellarexp.config import compose
    from stellarexp.data import pipeline
    from stellarexp.survey.source import simulate

    old = os.environ.get("STELLAREXP_HOME")
    os.environ["STELLAREXP_HOME"] = str(home)
    try:
        cfg = compose("data_cli", ["data=synthetic", "data.size=tiny"])
        summary = simulate(cfg.data, progress=False)
        path = pipeline.build(cfg.data, progress=False)
    finally:
        if old is None:
            os.environ.pop("STELLAREXP_HOME", None)
        else:
            os.environ["STELLAREXP_HOME"] = old
    # paths relative to the home, so a cached copy can move
    summary = dict(summary, root=str(Path(summary["root"]).relative_to(home)))
    return {"dataset": str(Path(path).relative_to(home)), "summary": summary}


def _cached_tiny_data(shared: Path) -> Path | None:
    """The tiny survey's ``data`` tree built once per source version, reused across pytest runs.

    ``make test-all`` runs several pytest sessions; each used to simulate the same tiny survey.
    The cache lives in STELLAREXP_TEST_CACHE (default ``.test-cache/`` in the repository, git
    ignored) keyed by a hash of the data code and configs; ``STELLAREXP_TEST_CACHE=off`` disables it.
    """
    from filelock import FileLock

    setting = os.environ.get("STELLAREXP_TEST_CACHE", "")
    if setting.lower() == "off":
        return None
    base = Path(setting) if setting else Path(__file__).resolve().parent.parent / ".test-cache"
    base.mkdir(parents=True, exist_ok=True)
    entry = base / f"tiny-{_sources_key()}"
    with FileLock(str(base / f"{entry.name}.lock")):
        if not (entry / "ready.json").is_file():
            import shutil

            staging = base / f"{entry.name}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            info = _build_tiny(staging)
            (staging / "ready.json").write_text(json.dumps(info))
            shutil.rmtree(entry, ignore_errors=True)
            staging.rename(entry)  # atomic: a killed build never leaves a trusted entry
    return entry


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory) -> Path:
    """A STELLAREXP_HOME holding the simulated `tiny` survey and its built dataset."""
    import shutil

    from filelock import FileLock

    shared = _shared_dir(tmp_path_factory)
    home = shared / "tiny_home"
    with FileLock(str(shared / "tiny_home.lock")):
        done = home / "ready.json"
        if not done.is_file():
            cached = _cached_tiny_data(shared)
            if cached is None:
                info = _build_tiny(home)
            else:
                # a private copy: tests write runs and caches into their home
                shutil.copytree(cached / "data", home / "data", dirs_exist_ok=True)
                info = json.loads((cached / "ready.json").read_text())
            info["dataset"] = str(home / info["dataset"])
            info["summary"]["root"] = str(home / info["summary"]["root"])
            done.write_text(json.dumps(info))
    return home


@pytest.fixture(scope="session")
def tiny_survey(tiny_home) -> dict:
    """Summary of the tiny survey plus the dataset path (keys: summary, dataset)."""
    return json.loads((tiny_home / "ready.json").read_text())


# --- a temporary STELLAREXP_HOME with its own MLflow store (tests/support/train.py)
@pytest.fixture(scope="session")
def store_home(tmp_path_factory) -> Path:
    """One STELLAREXP_HOME per test process, its MLflow database copied from :func:`migrated_db`."""
    path = tmp_path_factory.mktemp("stellarexp-home")
    (path / "mlruns").mkdir()
    shutil.copyfile(migrated_db(), path / "mlruns" / "mlflow.db")
    return path


@pytest.fixture
def home(store_home, monkeypatch) -> Path:
    """Point STELLAREXP_HOME at the shared temporary home and clear MLflow's environment."""
    monkeypatch.setenv("STELLAREXP_HOME", str(store_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return store_home


# --- a tiny trained image model, packaged and registered (tests/support/packaged.py)
@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> dict:
    """``{"home", "dataset", "model_uri", "run": <package run>, "runs": {stage: run}}``."""
    import torch

    from tests.support.images import write_image_dataset

    home = tmp_path_factory.mktemp("pkg-home")
    (home / "mlruns").mkdir()
    shutil.copyfile(migrated_db(), home / "mlruns" / "mlflow.db")
    path = home / "img.h5"
    write_image_dataset(path, n=96, seed=5)
    data = f"data.dataset_path={path}"
    torch.set_num_threads(1)
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STELLAREXP_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        jobs = home / "jobs"
        _, runs["backbone"] = run_job([*packaged.TINY_BACKBONE, "target=all", "stage.max_epochs=1", data],
                                      jobs / "bb")
        _, runs["head"] = run_job(["stage=head", *packaged.TINY_HEAD, "target=all", data], jobs / "head")
        _, runs["logg_classifier"] = run_job(["stage=logg_classifier", *packaged.TINY_HEAD, "target=logg",
                                              data], jobs / "clf")
        _, runs["logg_heads"] = run_job(["stage=logg_heads", *packaged.TINY_HEAD, "target=logg", data],
                                        jobs / "heads")
        _, pkg = run_job(["stage=package", f"stage.model_name={packaged.MODEL_NAME}", "stage.n_samples=40",
                          data], jobs / "package")
    for name, r in {**runs, "package": pkg}.items():
        assert r.info.status == "FINISHED", (name, r.data.tags.get("error"))
    return {"home": home, "dataset": path, "model_uri": f"models:/{packaged.MODEL_NAME}/1", "run": pkg,
            "runs": runs}


@pytest.fixture
def pkg_home(tiny_package, monkeypatch):
    """Point STELLAREXP_HOME (and so the MLflow store) at the tiny package's home."""
    monkeypatch.setenv("STELLAREXP_HOME", str(tiny_package["home"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    from stellarexp.tracking import store

    store.connect()
    return tiny_package["home"]


@pytest.fixture
def image_home(tmp_path, monkeypatch):
    """A fresh STELLAREXP_HOME with its own migrated MLflow store (the report tests' fake runs)."""
    home = tmp_path / "home"
    (home / "mlruns").mkdir(parents=True)
    shutil.copyfile(migrated_db(), home / "mlruns" / "mlflow.db")
    monkeypatch.setenv("STELLAREXP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return home
