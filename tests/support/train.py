"""Helpers of the training/tracking tests: tiny star tables and dataset files, a temporary
STELLAREXP_HOME with its own MLflow store, and in-process Hydra jobs (the fixtures built on
them, ``store_home`` and ``home``, are in tests/conftest.py).

Nothing here needs ../shared or the network.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]  # tests/support/train.py -> the repository
BANDS = "ugriz"


def make_stars(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Stars whose colours follow their labels (Teff mostly, [Fe/H] in u-g, logg weakly), with
    extinction, noisy observed labels and the ``<label>_true`` columns."""
    rng = np.random.default_rng(seed)
    teff = rng.uniform(3800, 6800, n)
    logg = np.where(rng.random(n) < 0.6, rng.normal(4.5, 0.2, n), rng.normal(2.5, 0.5, n))
    fe_h = rng.normal(-0.3, 0.35, n)
    x = 5040.0 / teff
    g_r = 1.4 * (x - 0.75) + 0.45
    u_g = 1.1 + 2.2 * (x - 0.75) + 0.35 * fe_h + 0.05 * (logg - 4)
    r_i = 0.45 * g_r - 0.02
    i_z = 0.3 * r_i + 0.01
    r = rng.uniform(14.0, 17.5, n)
    intrinsic = {"r": r, "g": r + g_r, "u": r + g_r + u_g, "i": r - r_i, "z": r - r_i - i_z}
    ebv = rng.uniform(0.01, 0.1, n)
    coeff = {"u": 4.239, "g": 3.303, "r": 2.285, "i": 1.698, "z": 1.263}
    stars = pd.DataFrame({"star_id": [f"S{seed}-{i:05d}" for i in range(n)]})
    for b in BANDS:
        ext = coeff[b] * ebv
        stars[f"psfmag_{b}"] = intrinsic[b] + ext + rng.normal(0, 0.01, n)
        stars[f"psfmagerr_{b}"] = 0.01
        stars[f"extinction_{b}"] = ext
    noise = {"teff": 60.0, "logg": 0.08, "fe_h": 0.03}
    for name, true in (("teff", teff), ("logg", logg), ("fe_h", fe_h)):
        stars[name] = true + rng.normal(0, noise[name], n)
        stars[f"{name}_err"] = noise[name]
        stars[f"{name}_true"] = true
    return stars


def write_tiny_dataset(path, n: int = 300, seed: int = 0) -> str:
    """Write a schema-conforming dataset file of ``n`` stars (blank images); return its fingerprint."""
    from stellarexp.data.dataset import DatasetContent, write_dataset

    stars = make_stars(n, seed)
    images = np.zeros((n, 5, 48, 48), np.float32)
    return write_dataset(path, DatasetContent(images=images, stars=stars, name=f"tiny-{seed}",
                                              funnel=[("all", n)]))


def isolated_env(home: Path) -> dict:
    """Environment for a subprocess: its own STELLAREXP_HOME and store, no plugin autoload."""
    env = dict(os.environ)
    env["STELLAREXP_HOME"] = str(home)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_RUN_ID", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


_TEMPLATE_DB: list[Path] = []


def migrated_db() -> Path:
    """An empty MLflow SQLite database with its schema created (once per test process).

    Creating the schema takes seconds; fresh homes of subprocess tests start from a copy.
    """
    if not _TEMPLATE_DB:
        import mlflow

        folder = Path(tempfile.mkdtemp(prefix="stellarexp-test-db-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / "mlflow.db"
        mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
        _TEMPLATE_DB.append(path)
    return _TEMPLATE_DB[0]


def run_cli(args: list[str], home: Path, cwd: Path | None = None, timeout: int = 240,
            store: bool = True):
    """Run ``python <args>`` with an isolated home (given a migrated MLflow database unless
    ``store=False``); return the CompletedProcess."""
    db = home / "mlruns" / "mlflow.db"
    if store and not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_db(), db)
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, *args], cwd=cwd or home, env=isolated_env(home),
                          capture_output=True, text=True, timeout=timeout, check=False)



def compose(overrides: list[str]):
    """Compose ``stellarexp/conf/train.yaml`` with ``overrides`` (Hydra's own node included)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from stellarexp.config import register_resolvers
    from stellarexp.home import conf_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)


def run_job(overrides: list[str], output_dir: Path):
    """Run one job in-process as Hydra would (HydraConfig set); return (value, MLflow run)."""
    import mlflow
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from stellarexp import train

    cfg = compose(overrides)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    HydraConfig.instance().set_config(cfg)
    try:
        value = train.run(cfg)
    finally:
        HydraConfig.instance().cfg = None
    last = mlflow.last_active_run()
    return value, mlflow.MlflowClient().get_run(last.info.run_id)
