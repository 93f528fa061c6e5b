"""A small MLflow store for the browser check: a study (parent + child runs), a report run with
a Markdown table, and a logged figure; plus the UI server started on it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "browser-check"
STUDY = "toy_study-teff"
REPORT_ROW = "| xgboost | color | 101.5 |"


@dataclass
class Store:
    """Ids and names of what :func:`build` logged."""

    home: Path
    experiment_id: str
    parent_id: str
    parent_name: str
    child_ids: list[str] = field(default_factory=list)
    child_names: list[str] = field(default_factory=list)
    report_id: str = ""
    report_artifact: str = "report/table.md"
    figure_artifact: str = "figures/residuals_teff.png"


def build(home: Path) -> Store:
    """Write the store under ``home/mlruns`` through the project's own store helpers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from stellarexp.tracking import store

    os.environ["STELLAREXP_HOME"] = str(home)
    client = store.connect(store.default_uri())
    exp_id = store.ensure_experiment(client, EXPERIMENT, store.default_artifact_root())
    parent_name = f"sweep-{STUDY}"
    parent = client.create_run(exp_id, run_name=parent_name,
                               tags={"optuna_study": STUDY, "stage": "sweep", "sweep_role": "parent"})
    out = Store(home, exp_id, parent.info.run_id, parent_name)
    rng = np.random.default_rng(0)
    for trial in range(3):
        name = f"baseline-xgboost-color-teff-trial{trial}"
        child = client.create_run(exp_id, run_name=name,
                                  tags={"mlflow.parentRunId": parent.info.run_id,
                                        "optuna_study": STUDY, "optuna_trial": str(trial),
                                        "stage": "baseline"})
        client.log_metric(child.info.run_id, "val/sigma_teff", 100 + 10 * rng.random())
        client.log_param(child.info.run_id, "model.params.max_depth", str(3 + trial))
        client.set_terminated(child.info.run_id, "FINISHED")
        out.child_ids.append(child.info.run_id)
        out.child_names.append(name)
    client.log_metric(parent.info.run_id, "sweep/best_value", 100.0)
    client.set_terminated(parent.info.run_id, "FINISHED")

    report = client.create_run(exp_id, run_name="comparison", tags={"stage": "report"})
    out.report_id = report.info.run_id
    client.log_text(report.info.run_id, "| model | features | sigma_teff |\n|---|---|---|\n"
                    f"{REPORT_ROW}\n", out.report_artifact)
    fig, ax = plt.subplots(figsize=(4, 3))
    x = rng.normal(5000, 500, 200)
    ax.scatter(x, x + rng.normal(0, 100, 200), s=4)
    ax.set_xlabel("APOGEE Teff [K]")
    ax.set_ylabel("predicted Teff [K]")
    fig.tight_layout()
    client.log_figure(report.info.run_id, fig, out.figure_artifact)
    plt.close(fig)
    client.set_terminated(report.info.run_id, "FINISHED")
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(home: Path, port: int, log_path: Path, timeout: float = 120.0) -> subprocess.Popen:
    """``python -m stellarexp.tracking.ui`` on 127.0.0.1:``port``; returns once /health answers."""
    env = {**os.environ, "STELLAREXP_HOME": str(home),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for key in ("MLFLOW_TRACKING_URI", "STELLAREXP_UI_HOST"):
        env.pop(key, None)
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process by the caller's cleanup
    proc = subprocess.Popen([sys.executable, "-m", "stellarexp.tracking.ui", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
