"""A shipped baseline study on the real entry point, ``python -m stellarexp.train -m ...``.

Slow (about a minute): three random-forest trials on a small star table, an MLflow parent run
with its child runs, the exported best parameters, and their re-run command.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.sweep_lines import check_quiet, check_sequential, trial_lines
from tests.support.tables import write_star_csv

pytestmark = pytest.mark.slow


def _run(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "stellarexp.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def test_baseline_study_with_parent_and_children(tmp_path):
    import mlflow
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    write_star_csv(tmp_path / "stars.csv")
    env = {**os.environ, "STELLAREXP_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    common = ["data=table", f"data.path={tmp_path / 'stars.csv'}", "target=teff",
              "evaluate.bootstrap=0", "stage.figure=false", "stage.save_models=false",
              "stage.predictions=false", "trainer.n_jobs=1"]
    proc = _run(["-m", "hydra/sweeper=stellarexp_optuna", "hydra.sweeper.study=random_forest_color",
                 "hydra.sweeper.n_trials=3", f"hydra.sweeper.results_dir={tmp_path / 'results'}",
                 *common], env, tmp_path)

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "home/mlruns/optuna/journal.log")))
    (summary,) = optuna.get_all_study_summaries(storage)
    name = summary.study_name
    assert name.startswith("random_forest_color-teff-paper-table-")
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    # one console line per trial: k/n, value, best so far and its trial, as the storage has them
    check_sequential(trial_lines(proc.stdout), trials, 3)
    check_quiet(proc.stdout + proc.stderr)
    # trial 0 is the paper's optimum for RF_color, Teff (Table 6)
    assert trials[0].params == {"model.params.max_depth": 4, "model.params.max_features": 0.63,
                                "model.params.min_samples_leaf": 1,
                                "model.params.min_samples_split": 4,
                                "model.params.n_estimators": 405}

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'home/mlruns/mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert parent.info.run_name == "sweep baseline random_forest color teff"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["optuna_trial"] for r in children) == ["0", "1", "2"]
    assert all(r.data.tags["optuna_study"] == name and r.data.tags["optuna_state"] == "COMPLETE"
               for r in children)
    by_trial = {int(r.data.tags["optuna_trial"]): r for r in children}
    for t in trials:  # the value Optuna holds is the child run's logged metric
        child = by_trial[t.number]
        assert child.data.metrics["val/sigma_teff"] == pytest.approx(t.value)
        # the trial's values are in its params, its command line in a tag, its whole config in
        # config/config.yaml; its name says which trial it is
        for key, value in t.params.items():
            assert float(child.data.params[key]) == pytest.approx(value)
        assert f"hydra.sweeper.trial_number={t.number}" not in child.data.tags["overrides"]
        assert "model=random_forest" in child.data.tags["overrides"]
        assert [a.path for a in client.list_artifacts(child.info.run_id, "config")] == ["config/config.yaml"]
        assert child.info.run_name == f"baseline random_forest color teff trial {t.number}"
    assert parent.data.tags["sweep_metric"] == "val/sigma_teff"
    assert parent.data.tags["best_run_id"] == by_trial[study.best_trial.number].info.run_id
    assert parent.data.metrics["sweep/best_value"] == pytest.approx(study.best_value)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/search_space.yaml", "sweep/best.yaml", "sweep/optimization_history.png",
            "sweep/param_importances.png"} <= artifacts

    # the exported command re-runs the best configuration and gets the same value
    result = yaml.safe_load((tmp_path / "results" / f"{name}.yaml").read_text())
    assert result["best_value"] == pytest.approx(study.best_value)
    args = shlex.split(result["command"])
    assert args[:3] == ["python", "-m", "stellarexp.train"]
    _run(args[3:], env, tmp_path)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].data.metrics["val/sigma_teff"] == pytest.approx(study.best_value)
