"""A wheel built from a clean copy of the tree, installed into a fresh virtualenv (reusing the
installed dependencies: no second torch download), works from another directory with its home
elsewhere: ``train --help``, a baseline on a small table, a two-trial sweep. Slow (~2 minutes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.tables import write_star_csv

pytestmark = pytest.mark.slow


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=False).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    src = tmp_path / "src"
    for rel in tracked:  # a clean copy: building writes build/ and *.egg-info there, not here
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
          str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("stellarexp-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # the dependencies of this environment, after the new environment's own packages
    (site / "reuse-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_star_csv(elsewhere / "stars.csv", n=120)
    env = {**os.environ, "STELLAREXP_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PYTHONPATH", None)
    probe = "import stellarexp, hydra_plugins.stellarexp_sweeper as s; print(stellarexp.__file__); print(s.__file__)"
    where = _run([str(py), "-c", probe], cwd=elsewhere, env=env).stdout
    assert str(site) in where and str(REPO) not in where  # the installed copy, not the checkout
    helptext = _run([str(py), "-m", "stellarexp.train", "--help"], cwd=elsewhere, env=env).stdout
    assert "stage" in helptext and "model" in helptext
    table = ["data=table", "data.path=stars.csv", "target=teff", "evaluate.bootstrap=0", "stage.figure=false",
             "stage.predictions=false", "trainer.n_jobs=1"]
    _run([str(py), "-m", "stellarexp.train", "model=random_forest", "+model.params.n_estimators=10", *table],
         cwd=elsewhere, env=env)
    _run([str(py), "-m", "stellarexp.train", "-m", "hydra.sweeper.study=random_forest_color",
          "hydra.sweeper.n_trials=2", *table], cwd=elsewhere, env=env)
    assert list((tmp_path / "home" / "sweeps" / "results").glob("*.yaml"))
    assert (tmp_path / "home" / "mlruns" / "mlflow.db").is_file()
    installed = Path(where.splitlines()[0]).parent
    assert not list(installed.rglob("results")) and not (installed / "outputs").exists()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["stars.csv"]  # nothing written here
