"""``python -m stellarexp.reproduce experiment=quick|paper``: the paper's whole protocol.

One Hydra app (``stellarexp/conf/reproduce.yaml``; the experiments in ``stellarexp/conf/experiment/``) that runs an
experiment's steps in order, in this process, under one MLflow parent run: the dataset
(simulated and built when absent), the baselines (``tune=true``: their Optuna studies first),
the image model, the packaged model, the perturbation experiments and the report. A step whose
job already FINISHED with the same config and data fingerprint is reused, so a rerun after an
interruption continues where it stopped. ``dry_run=true`` prints the plan and runs nothing.
See docs/reproduce.md.

Modules: :mod:`~stellarexp.reproduce.plan` (steps from the config),
:mod:`~stellarexp.reproduce.jobs` (one step's train job),
:mod:`~stellarexp.reproduce.runner` (reuse, resume), :mod:`~stellarexp.reproduce.parent_run`
(the parent run, report link), :mod:`~stellarexp.reproduce.step_overrides` (a step's overrides),
:mod:`~stellarexp.reproduce.summary` (what it did, as text),
:mod:`~stellarexp.reproduce.tune` (``tune=true``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from stellarexp.home import outputs_dir
from stellarexp.reproduce.plan import ReproduceError, check_registered

__all__ = ["ReproduceError", "run"]


def _output_dir() -> Path:
    """The Hydra job's folder, or a fresh one under ``$STELLAREXP_HOME/outputs`` outside Hydra."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)

    folder = outputs_dir() / "reproduce"
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=folder))


def run(cfg, output_dir=None):
    """Run (or, with ``cfg.dry_run``, plan) the experiment of ``cfg``; return the step results.

    Parameters
    ----------
    cfg : omegaconf.DictConfig
        The composed ``stellarexp/conf/reproduce.yaml``.
    output_dir : path-like, optional
        The reproduce job's folder (default: Hydra's, else a new one under ``outputs/``).

    Returns
    -------
    list of stellarexp.reproduce.summary.StepResult
    """
    from stellarexp.reproduce.runner import Reproduce

    job = Reproduce(cfg, output_dir or _output_dir())
    if cfg.get("dry_run"):
        results = job.dry_run()
        print(job.plan_text(), flush=True)

        check_registered(job.steps, job.name)
        return results
    results = job.run()
    print(f"\nreproduce {job.name} finished: MLflow run {job.parent_id}\n", flush=True)
    print(job.steps_markdown(), flush=True)
    if job.report_text:
        print(f"\nreport (run {job.report_step().run_id}):\n\n{job.report_text}", flush=True)
    return results
