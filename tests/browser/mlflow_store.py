"""The store the browser check looks at, written by the project itself on the tiny survey: a
reproduce run whose children are the 8 baselines and the report (its description holds the
report's table), and an Optuna study's parent run with 3 trial runs; plus the UI server on it.

``python -m tests.browser.mlflow_store <home> <tiny data folder>`` builds it in a fresh process
(its own Hydra and MLflow state) and writes ``<home>/store.json``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.support.paths import REPO

EXPERIMENT = "browser-check"
MODELS = ("xgboost", "lightgbm", "catboost", "random_forest")
FIGURE_STEP = "baseline_xgboost_color"  # the one baseline that draws its figure
COMMON = ["evaluate.bootstrap=20", "+model.params.n_estimators=30", "stage.save_models=false"]
SWEEP = ["-m", "hydra/sweeper=stellarexp_optuna", "hydra.sweeper.study=random_forest_color",
         "hydra.sweeper.n_trials=3", "data=synthetic", "data.size=tiny", "target=teff",
         "evaluate.bootstrap=0", "stage.figure=false", "stage.save_models=false",
         "stage.predictions=false", "trainer.n_jobs=1", f"tracking.experiment={EXPERIMENT}"]


@dataclass
class Store:
    """Ids and names of the runs :func:`build` made."""

    home: str
    experiment_id: str
    parent_id: str                # the reproduce run
    parent_name: str
    baseline_ids: list[str] = field(default_factory=list)
    baseline_names: list[str] = field(default_factory=list)
    report_id: str = ""
    report_artifact: str = "comparison/comparison.md"
    figure_run_id: str = ""
    figure_artifact: str = "figures/pred_vs_true.png"
    sweep_id: str = ""
    sweep_name: str = ""
    trial_names: list[str] = field(default_factory=list)


def _env(home: Path) -> dict:
    env = {**os.environ, "STELLAREXP_HOME": str(home),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "STELLAREXP_UI_HOST"):
        env.pop(key, None)
    return env


def build(home: Path, data: Path, timeout: float = 900.0) -> Store:
    """Write the store under ``home/mlruns`` (``home/data`` links to ``data``, the tiny survey's
    data folder) in a child process; return what it made."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "build.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "tests.browser.mlflow_store", str(home), str(data)],
                              env=_env(home), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"building the browser store failed ({proc.returncode}):\n"
                           f"{log.read_text()[-4000:]}")
    return Store(**json.loads((home / "store.json").read_text()))


def _reproduce(home: Path) -> None:
    """The reproduce of 8 baselines and the report, on the tiny survey."""
    from omegaconf import open_dict

    from stellarexp import reproduce
    from stellarexp.config import compose

    cfg = compose("reproduce", ["progress=false", "accelerator=cpu", "experiment=tiny",
                                f"tracking.experiment={EXPERIMENT}"])
    steps: dict = {"data": {"stage": "data"}}
    for features in ("mag", "color"):
        for model in MODELS:
            name = f"baseline_{model}_{features}"
            steps[name] = {"stage": "baseline", "overrides": [
                f"model={model}", f"features={features}", "target=all", *COMMON,
                f"stage.figure={str(name == FIGURE_STEP).lower()}"]}
    steps["report"] = {"stage": "report", "collect": True}
    with open_dict(cfg):
        cfg.experiment.steps = steps
    out = home / "outputs" / "reproduce"
    out.mkdir(parents=True, exist_ok=True)
    reproduce.run(cfg, output_dir=out)


def _sweep(home: Path) -> None:
    """Three trials of the shipped random-forest study, through the real entry point."""
    proc = subprocess.run([sys.executable, "-m", "stellarexp.train", *SWEEP,
                           f"hydra.sweeper.results_dir={home / 'sweep-results'}"],
                          env=_env(home), cwd=home, capture_output=True, text=True, timeout=600,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _describe(home: Path) -> Store:
    from stellarexp.tracking import store

    client = store.connect(store.default_uri())
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = client.search_runs([exp_id], max_results=1000, order_by=["attributes.start_time ASC"])
    (parent,) = [r for r in runs if r.data.tags.get("stage") == "reproduce"]
    (sweep,) = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    baselines = [r for r in runs if r.data.tags.get("stage") == "baseline"
                 and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    (report,) = [r for r in runs if r.data.tags.get("stage") == "report"]
    (figure,) = [r for r in baselines if r.data.tags.get("reproduce_step") == FIGURE_STEP]
    return Store(str(home), exp_id, parent.info.run_id, parent.info.run_name,
                 [r.info.run_id for r in baselines], [r.info.run_name for r in baselines],
                 report.info.run_id, figure_run_id=figure.info.run_id, sweep_id=sweep.info.run_id,
                 sweep_name=sweep.info.run_name, trial_names=[r.info.run_name for r in trials])


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(home: Path, port: int, log_path: Path, timeout: float = 120.0) -> subprocess.Popen:
    """``python -m stellarexp.tracking.ui`` on 127.0.0.1:``port``; returns once /health answers."""
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process by the caller's cleanup
    proc = subprocess.Popen([sys.executable, "-m", "stellarexp.tracking.ui", "--port", str(port)],
                            env=_env(home), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the MLflow UI exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the MLflow UI did not answer within {timeout:.0f} s; see {log_path}")


if __name__ == "__main__":
    home_dir, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
    if not (home_dir / "data").exists():
        (home_dir / "data").symlink_to(data_dir)
    _reproduce(home_dir)
    _sweep(home_dir)
    (home_dir / "store.json").write_text(json.dumps(asdict(_describe(home_dir)), indent=1))
