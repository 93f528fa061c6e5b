"""One baseline study, four worker processes, a PostgreSQL Optuna storage and an MLflow server.

The scale-out promise (docs/scaleout.md): ``tracking=server`` plus
``hydra.sweeper.storage=postgresql://...`` are the only changes that move a sweep onto shared
services. Four ``python -m stellarexp.train -m ...`` processes are started at once on the tiny
dataset; afterwards every trial of the study must have exactly one child run under one parent run
on the server, with its value, and nothing lost or duplicated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
WORKERS, N_TRIALS = 4, 12


def _start_worker(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 - closed by the caller through proc.stdout
    return subprocess.Popen([sys.executable, "-m", "stellarexp.train", *args], cwd=REPO, env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop_all(procs: list[subprocess.Popen]) -> None:
    """End the workers still running (a failed or timed-out test), by their own ids."""
    import signal

    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _artifact_files(client, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifact_files(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_four_workers_share_one_study_on_postgres_and_the_server(
        postgres, mlflow_server, tiny_home, tmp_path):
    import mlflow
    import optuna

    storage_url = postgres.create_database("optuna")
    env = {**os.environ, "STELLAREXP_HOME": str(tiny_home),
           "MLFLOW_TRACKING_URI": mlflow_server.uri,
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    # the usual sweep command; the two scale-out switches are the last two arguments
    args = ["-m", "stage=baseline", "sweep=xgboost_color", "target=teff", "data=synthetic",
            "data.size=tiny", f"hydra.sweeper.n_trials={N_TRIALS}",
            f"hydra.sweeper.results_dir={tmp_path / 'results'}",
            "trainer.n_jobs=1", "evaluate.bootstrap=0", "stage.figure=false",
            "tracking=server", f"hydra.sweeper.storage={storage_url}"]
    logs = [tmp_path / f"worker{i}.log" for i in range(WORKERS)]
    t0 = time.monotonic()
    procs: list[subprocess.Popen] = []
    try:
        for i in range(WORKERS):
            # one output folder per worker (the default is named after the second it starts)
            own_dir = f"hydra.sweep.dir={tmp_path / 'multirun' / str(i)}"
            procs.append(_start_worker([*args, own_dir], env, logs[i]))
        for proc in procs:
            proc.wait(timeout=420)
    finally:
        _stop_all(procs)
    wall = time.monotonic() - t0
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, f"{log}:\n{log.read_text()[-4000:]}"

    # --- Optuna: one study, all trials complete, the paper's first trial enqueued once
    (summary,) = optuna.get_all_study_summaries(storage_url)
    study = optuna.load_study(study_name=summary.study_name, storage=storage_url)
    trials = study.get_trials()
    assert len(trials) == N_TRIALS, [t.number for t in trials]
    assert Counter(t.state.name for t in trials) == {"COMPLETE": N_TRIALS}
    assert sum(t.user_attrs.get("origin") == "first_trial" for t in trials) == 1
    pids = {t.user_attrs["worker_pid"] for t in trials}
    assert pids <= {p.pid for p in procs} and len(pids) >= 2, pids

    # --- MLflow on the server: one parent, one child per trial, values equal, artifacts stored
    client = mlflow.MlflowClient(mlflow_server.uri)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exp_ids, f"tags.optuna_study = '{study.study_name}'",
                              max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    children = [r for r in runs if r is not parent]
    per_trial = Counter(r.data.tags.get("optuna_trial") for r in children)
    assert per_trial == Counter({str(t.number): 1 for t in trials}), per_trial
    by_number = {int(r.data.tags["optuna_trial"]): r for r in children}
    for t in trials:
        run = by_number[t.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.tags["optuna_state"] == "COMPLETE"
        assert run.data.metrics["val/sigma_teff"] == pytest.approx(t.value, rel=1e-6)
    best = min(trials, key=lambda t: t.value)
    # the parent names a best trial's run (ties: any trial with the best value)
    best_numbers = {t.number for t in trials if t.value == best.value}
    assert int(parent.data.tags["best_trial"]) in best_numbers
    assert parent.data.tags["best_run_id"] == by_number[int(parent.data.tags["best_trial"])].info.run_id
    # artifacts went through the server into its artifact store, not into the local home
    sample = by_number[best.number]
    files = _artifact_files(client, sample.info.run_id)
    assert files and any(f.endswith(".csv") for f in files), files
    stored = {p.name for p in mlflow_server.artifacts.rglob("*") if p.is_file()}
    assert {Path(f).name for f in files} <= stored

    figures = {"workers": WORKERS, "trials": len(trials), "child_runs": len(children),
               "parent_runs": len(parents), "workers_with_trials": len(pids),
               "trials_per_worker": sorted(Counter(t.user_attrs["worker_pid"]
                                                   for t in trials).values()),
               "wall_s": round(wall, 1)}
    print("services figures:", json.dumps(figures))
