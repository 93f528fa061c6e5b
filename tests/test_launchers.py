"""Hydra launchers next to the project's sweeper: discovery, the presets in stellarexp/conf/hydra/launcher/
composing with ``stellarexp/conf/train.yaml`` and building their launcher, and (slow) an Optuna batch run
in parallel by the joblib launcher.
"""

from __future__ import annotations

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from stellarexp.config import register_resolvers
from stellarexp.home import conf_dir

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def _compose(overrides: list[str]):
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_hydra_finds_the_launchers_and_our_sweeper_in_one_namespace():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper

    plugins = Plugins.instance()
    launchers = {f"{c.__module__}.{c.__name__}" for c in plugins.discover(Launcher)}
    sweepers = {f"{c.__module__}.{c.__name__}" for c in plugins.discover(Sweeper)}
    assert {JOBLIB, SLURM} <= launchers
    assert "hydra_plugins.stellarexp_sweeper.sweeper.StellarexpSweeper" in sweepers


@pytest.mark.parametrize("choice, target, expected", [
    ("local", JOBLIB, {"n_jobs": 2, "backend": "loky"}),
    ("joblib", JOBLIB, {}),
    ("slurm", SLURM, {"cpus_per_task": 4, "tasks_per_node": 1, "gpus_per_node": None,
                      "partition": None}),
    ("slurm_gpu", SLURM, {"gpus_per_node": 1, "cpus_per_task": 8, "timeout_min": 720}),
    ("submitit_slurm", SLURM, {}),
])
def test_launcher_presets_compose_with_the_train_config(choice, target, expected):
    cfg = _compose(["stage=baseline", "target=teff", f"hydra/launcher={choice}"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == target
    for key, value in expected.items():
        assert launcher[key] == value, key
    assert cfg.hydra.sweeper._target_.endswith("StellarexpSweeper")  # still our sweeper
    if target == SLURM:
        # the batch script's threads follow the job's CPUs; output next to the sweep
        threads = f"export OMP_NUM_THREADS={launcher['cpus_per_task']}"
        assert choice == "submitit_slurm" or threads in launcher["setup"]
        assert launcher["submitit_folder"].startswith(cfg.hydra.sweep.dir)


def test_launcher_presets_build_their_launcher():
    """Every key of our presets is an argument the launcher class accepts."""
    from hydra.utils import instantiate

    for choice, cls in (("local", "JoblibLauncher"), ("slurm", "SlurmLauncher"),
                        ("slurm_gpu", "SlurmLauncher")):
        extra = ("hydra.launcher.tasks_per_node=1" if "slurm" in choice
                 else "hydra.launcher.n_jobs=3")
        cfg = _compose(["stage=backbone", "model=convit", "trainer=ddp", f"hydra/launcher={choice}",
                        extra])
        launcher = instantiate(cfg.hydra.launcher)
        assert type(launcher).__name__ == cls
        params = getattr(launcher, "params", None) or getattr(launcher, "joblib", None)
        if choice == "local":
            assert params["n_jobs"] == 3
        else:
            assert params["tasks_per_node"] == 1 and params["cpus_per_task"] in (4, 8)


@pytest.mark.slow
def test_an_optuna_batch_runs_in_parallel_through_joblib(tiny_home, tmp_path):
    """Two trials of a study in one batch, run at once by ``hydra/launcher=local`` (~1 min)."""
    import os
    import subprocess
    import sys

    import mlflow
    import optuna

    storage = tmp_path / "journal.log"
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "STELLAREXP_HOME": str(tiny_home),
           "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
           "OMP_NUM_THREADS": "1"}
    args = ["-m", "sweep=xgboost_color", "target=teff", "data=synthetic", "data.size=tiny",
            "hydra/launcher=local", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}",
            f"hydra.sweeper.results_dir={tmp_path / 'results'}",
            f"hydra.sweep.dir={tmp_path / 'mr'}",
            f"tracking.artifact_root={tmp_path / 'artifacts'}",
            "trainer.n_jobs=1", "evaluate.bootstrap=0", "stage.figure=false"]
    proc = subprocess.run([sys.executable, "-m", "stellarexp.train", *args], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Joblib.Parallel(n_jobs=2" in out  # both trials handed to joblib as one batch

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = JournalStorage(JournalFileBackend(str(storage)))
    (summary,) = optuna.get_all_study_summaries(journal)
    trials = optuna.load_study(study_name=summary.study_name, storage=journal).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.optuna_study = '{summary.study_name}'")
    children = {r.data.tags.get("optuna_trial"): r for r in runs
                if r.data.tags.get("sweep_role") != "parent"}
    assert set(children) == {"0", "1"}
    for t in trials:
        assert children[str(t.number)].data.metrics["val/sigma_teff"] == pytest.approx(t.value)
