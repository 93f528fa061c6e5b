"""The reproduce tests' home: the tiny survey's data under a fresh MLflow store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.train import migrated_db


@pytest.fixture
def repro_home(tiny_home, tmp_path, monkeypatch) -> Path:
    """A fresh STELLAREXP_HOME (own MLflow store) whose data/ is the tiny survey's."""
    home = tmp_path / "home"
    (home / "mlruns").mkdir(parents=True)
    (home / "data").symlink_to(tiny_home / "data")
    shutil.copyfile(migrated_db(), home / "mlruns" / "mlflow.db")
    monkeypatch.setenv("STELLAREXP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return home
