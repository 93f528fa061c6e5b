"""Shared fixtures: a tiny synthetic survey and its dataset, built once per test session.

With pytest-xdist the workers share one copy through a file lock in the common base temp dir.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TESTS_DATA = Path(__file__).parent / "data"


def _shared_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # xdist: every worker's basetemp is a child of one session directory
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory) -> Path:
    """A STELLAREXP_HOME holding the simulated `tiny` survey and its built dataset."""
    from filelock import FileLock

    shared = _shared_dir(tmp_path_factory)
    home = shared / "tiny_home"
    with FileLock(str(shared / "tiny_home.lock")):
        done = home / "ready.json"
        if not done.is_file():
            from stellarexp.config import compose
            from stellarexp.data import pipeline

            old = os.environ.get("STELLAREXP_HOME")
            os.environ["STELLAREXP_HOME"] = str(home)
            try:
                cfg = compose("data_cli", ["data=synthetic", "data.size=tiny"])
                summary = pipeline.simulate(cfg.data, progress=False)
                path = pipeline.build(cfg.data, progress=False)
            finally:
                if old is None:
                    os.environ.pop("STELLAREXP_HOME", None)
                else:
                    os.environ["STELLAREXP_HOME"] = old
            done.write_text(json.dumps({"dataset": str(path), "summary": summary}))
    return home


@pytest.fixture(scope="session")
def tiny_survey(tiny_home) -> dict:
    """Summary of the tiny survey plus the dataset path (keys: summary, dataset)."""
    return json.loads((tiny_home / "ready.json").read_text())
