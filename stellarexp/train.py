"""``python -m stellarexp.train [-m] key=value ...``: compose a stage, run it, record it in MLflow.

The Hydra app reads ``stellarexp/conf/train.yaml`` from :func:`stellarexp.home.conf_dir`, so it works from
any directory; run directories go to ``$STELLAREXP_HOME/outputs``. Each job opens one MLflow run
(:func:`stellarexp.tracking.runs.tracked_run`), calls the selected stage
(:mod:`stellarexp.stages`), logs the returned metrics in one batch and returns
``optimized_metric`` to Hydra (and so to a sweeper). A stage that raises ends its run FAILED with
the traceback logged; the exception propagates, so a single run exits non-zero while Hydra's
launcher goes on with the next job of a multirun (which then exits non-zero at its end).

Only Hydra is imported at start-up: ``--help`` loads neither mlflow nor torch.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from stellarexp import stages
from stellarexp.config import ConfigError, in_multirun, register_resolvers
from stellarexp.home import conf_dir, outputs_dir
from stellarexp.sdss.frames import FrameError
from stellarexp.stages.checks import check_stage
from stellarexp.tracking.diskfull import ArtifactStoreFull
from stellarexp.tracking.redact import install_log_redaction
from stellarexp.tune.studies import SweepError

log = logging.getLogger("stellarexp.train")


def _job_info() -> tuple[str, list[str]]:
    """The job's output directory and command-line overrides (outside Hydra: a fresh folder)."""
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        return str(hc.runtime.output_dir), list(hc.overrides.task)

    outputs_dir().mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="job-", dir=outputs_dir()), []


def run(cfg) -> float | None:
    """Run one job of the composed config ``cfg``; return its optimised metric.

    Parameters
    ----------
    cfg : omegaconf.DictConfig
        Config composed from ``stellarexp/conf/train.yaml`` (a ``hydra`` node, if any, is not logged).

    Returns
    -------
    float or None
        The value of ``optimized_metric`` (``None`` when the stage did not produce it).
    """
    from stellarexp.tracking.runs import tracked_run

    register_resolvers()
    install_log_redaction()  # the job's log file and console never show a secret
    if in_multirun():
        _quiet_multirun()
    stage_fn = stages.resolve(str(cfg.stage.name))
    check_stage(cfg)  # a bad value stops here, naming its key, before any run or work
    metric = stages.optimized_metric(cfg)
    output_dir, overrides = _job_info()
    resolved = {key: OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
                if OmegaConf.is_config(node) else node
                for key, node in cfg.items() if key != "hydra"}
    with tracked_run(resolved, output_dir, overrides) as tracked:
        log.info("MLflow run %s (stage=%s), output %s", tracked.run_id, cfg.stage.name, output_dir)
        try:
            metrics = stage_fn(cfg, tracked) or {}
        except Exception:
            log.error("stage %s failed; MLflow run %s marked FAILED (traceback logged)",
                      cfg.stage.name, tracked.run_id)
            raise
        if metrics:
            tracked.log_metrics(metrics)
    value = tracked.metrics.get(metric)
    if value is None:
        if tracked.metrics and cfg.stage.get("objective", True):
            log.warning("the run did not log optimized_metric %r; returning None", metric)
        return None
    log.info("%s = %.6g (MLflow run %s)", metric, value, tracked.run_id)
    return float(value) if math.isfinite(value) else float("nan")


def _quiet_multirun() -> None:
    """Inside a multirun, keep the console to what the sweeper prints per trial: no MLflow
    artifact-download bars, and each warning once per process rather than once per job (the
    image stages also turn Lightning's bar and info messages off:
    :func:`stellarexp.stages.image_common.trainer_kwargs`)."""
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    if not isinstance(warnings.showwarning, _ShowOnce):
        warnings.showwarning = _ShowOnce(warnings.showwarning)


class _ShowOnce:
    """A ``warnings.showwarning`` that shows each (category, text) once. Python's ``once``
    filter cannot do it: every ``catch_warnings`` block (the libraries enter many per job)
    resets what was shown."""
    def __init__(self, show):
        self.show, self.seen = show, set()

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        key = (category, str(message))
        if key not in self.seen:
            self.seen.add(key)
            self.show(message, category, filename, lineno, file, line)


def _user_error(exc: BaseException) -> bool:
    """True for the project's "bad input" errors, whose message says what to fix."""
    from stellarexp.data.catalog_files import CatalogError
    from stellarexp.data.dataset import DatasetError
    from stellarexp.data.pipeline import UserInputError

    known = (CatalogError, ConfigError, DatasetError, FrameError, UserInputError, SweepError,
             ArtifactStoreFull)
    # a plain LookupError is the stages' "no such run" (KeyError/IndexError are bugs)
    return isinstance(exc, known) or type(exc) is LookupError


def _task(cfg) -> float | None:
    try:
        return run(cfg)
    except Exception as exc:
        # bad input in a single run: the message, not a traceback (the run is already FAILED
        # with the traceback logged). In a multirun the launcher or sweeper records the error.
        multirun = in_multirun()
        full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"  # Hydra's switch for tracebacks
        if multirun or full_error or not _user_error(exc):
            raise
        # stderr (Hydra's console log is stdout), so scripts and users see it as the error
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def main() -> None:
    """Console entry point (Hydra reads ``sys.argv``)."""
    register_resolvers()
    app = hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")(_task)
    app()


if __name__ == "__main__":
    main()
