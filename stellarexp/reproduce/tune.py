"""``tune=true``: sweep a baseline step's Optuna studies, then train with the best parameters.

A baseline step (``model=<m> features=<f> target=all``) tunes one study per target, the study
file ``stellarexp/studies/<m>_<f>.yaml`` (the paper's search ranges), through the project's sweeper:
``python -m stellarexp.train -m sweep=<m>_<f> target=<t> ...`` in a subprocess, which resumes a
study up to its trial count. The best parameters (``$STELLAREXP_HOME/sweeps/results/<study>.yaml``) become
per-target overrides ``++model.hparams.<t>.<name>=<value>`` of the step's own job, so the tuned
baseline is one run like the untuned one. Each study's MLflow parent run is made a child of the
reproduce run.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import yaml

from stellarexp.reproduce.plan import ReproduceError
from stellarexp.stages import targets_of
from stellarexp.tune import naming, studies

from .jobs import compose_job

log = logging.getLogger("stellarexp.reproduce")

# the study files set these; everything else of the step's overrides reaches every trial
_STUDY_KEYS = ("stage=", "model=", "features=", "target=")


def _study_overrides(overrides: list[str], study: str, target: str) -> list[str]:
    kept = [o for o in overrides if not o.startswith(_STUDY_KEYS)]
    return [f"sweep={study}", f"target={target}", *kept]


def _read_results(path):
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None


def _trials_done(results) -> int:
    """Finished trials that count towards ``n_trials`` (a killed trial that was run again does not)."""
    counts = (results or {}).get("trials") or {}
    return sum(int(counts.get(k, 0)) for k in ("complete", "pruned", "fail")) - int(counts.get("retried", 0))


def study_plan(job_cfg, overrides: list[str], n_trials: int | None) -> list[dict]:
    """One entry per target of a baseline job: study id, name, results file, trials, command.

    Parameters
    ----------
    job_cfg : omegaconf.DictConfig
        The step's composed train config (its dataset must exist for the study name).
    overrides : list of str
        The step's overrides.
    n_trials : int, optional
        Trials per study (``None``: the study file's ``n_trials``, else 20).
    """
    study = f"{job_cfg.model.name}_{job_cfg.features.name}"
    if study not in studies.available_studies():
        raise ReproduceError(f"tune=true: no study file stellarexp/studies/{study}.yaml for this baseline")
    wanted = int(n_trials or studies.load_study(study).settings.get("n_trials") or 20)
    out = []
    for target in targets_of(job_cfg.get("target")):
        args = _study_overrides(overrides, study, target)
        cfg_t = compose_job([o for o in overrides if not o.startswith("target=")]
                            + [f"target={target}"])
        name = naming.study_name(study, cfg_t, naming.data_identity(cfg_t, prepare=False))
        command = [sys.executable, "-m", "stellarexp.train", "-m", *args,
                   f"hydra.sweeper.n_trials={wanted}"]
        out.append({"target": target, "study": study, "name": name, "n_trials": wanted,
                    "results": studies.results_file(studies.results_dir(), name),
                    "command": command})
    return out


def tuned_overrides(job_cfg, overrides: list[str], n_trials: int | None, client=None,
                    parent_run_id: str | None = None) -> list[str]:
    """Run (or resume) the step's studies and return the best parameters as overrides.

    A study whose results file already counts ``n_trials`` finished trials is not started again.
    """
    extra = []
    for entry in study_plan(job_cfg, overrides, n_trials):
        results = _read_results(entry["results"])
        if _trials_done(results) < entry["n_trials"]:
            log.info("tuning %s for %s: %d trials (%s)", entry["study"], entry["target"],
                     entry["n_trials"], " ".join(entry["command"][1:]))
            done = subprocess.run(entry["command"], check=False)
            if done.returncode != 0:
                raise ReproduceError(f"the sweep of study {entry['name']} exited with "
                                     f"{done.returncode}; its output is above. Rerun to resume it")
            results = _read_results(entry["results"])
        if not results or not results.get("params"):
            raise ReproduceError(f"study {entry['name']} has no best trial: "
                                 f"{entry['results']} is missing or empty")
        for key, value in results["params"].items():
            name = str(key).removeprefix("model.params.")
            extra.append(f"++model.hparams.{entry['target']}.{name}={value}")
        if client is not None and parent_run_id:
            _adopt_sweep_run(client, entry["name"], parent_run_id)
    return extra


def _adopt_sweep_run(client, study_name: str, parent_run_id: str) -> None:
    """Make the study's MLflow parent run a child of the reproduce run (tag only)."""
    try:
        query = f"tags.optuna_study = '{study_name}' and tags.sweep_role = 'parent'"
        exp_ids = [e.experiment_id for e in client.search_experiments()]
        for run in client.search_runs(exp_ids, query, max_results=5):
            client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_run_id)
    except Exception as exc:  # noqa: BLE001 - linking is a convenience
        log.warning("could not link the sweep run of %s: %s", study_name, exc)
