"""The command-line overrides of a step's train job: its own, the reproduce's tracking store,
the runs of earlier steps it reads (pinned, so its hash changes when they are re-run), and the
tags that tie its run to the reproduce."""

from __future__ import annotations

from collections.abc import Mapping

from stellarexp.reproduce import plan
from stellarexp.reproduce.plan import ReproduceError, Step
from stellarexp.reproduce.summary import StepResult


def quote(value: str) -> str:
    """``value`` as a single-quoted Hydra override value (backslashes and quotes escaped).

    Parameters
    ----------
    value : str

    Returns
    -------
    str
    """
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def tracking_overrides(cfg) -> list[str]:
    """The overrides that send a job to the reproduce's tracking store and experiment.

    Parameters
    ----------
    cfg : omegaconf.DictConfig
        The composed ``stellarexp/conf/reproduce.yaml``.

    Returns
    -------
    list of str
        Empty when the reproduce uses the default store and experiment.
    """
    tcfg = cfg.get("tracking") or {}
    out = []
    if tcfg.get("uri"):
        out.append(f"tracking.uri={quote(tcfg.uri)}")
    if tcfg.get("experiment"):
        out.append(f"tracking.experiment={quote(tcfg.experiment)}")
    return out


def job_overrides(step: Step, results: Mapping[str, StepResult], experiment: str,
                  parent_id: str | None, tracking: list[str],
                  dry: bool) -> tuple[list[str], list[str]]:
    """The overrides of a step's job, and the earlier steps it waits for without a run.

    Parameters
    ----------
    step : Step
    results : mapping
        Step name -> result of the steps before ``step``.
    experiment : str
        The reproduce experiment's name (tagged on the job's run).
    parent_id : str or None
        The parent run; the job's run becomes its child.
    tracking : list of str
        :func:`tracking_overrides` of the reproduce.
    dry : bool
        A dry run: a missing run of an earlier step is a placeholder, not an error.

    Returns
    -------
    tuple of (list of str, list of str)

    Raises
    ------
    ReproduceError
        Outside a dry run, when an earlier step that ``step`` reads has no run.
    """
    extra, waiting = [], []
    for key, target in step.refs.items():
        run_id = results[target].run_id if target in results else None
        if run_id is None:
            if not dry:
                raise ReproduceError(f"step '{step.name}' needs the run of step '{target}', "
                                     "which has none")
            waiting.append(target)
            run_id = f"<run of {target}>"
        extra.append(f"++{key}={quote(run_id)}")
    if step.collect:
        ids = [r.run_id or f"<run of {r.step}>" for r in results.values()
               if r.stage != plan.DATA_STAGE]
        waiting += [r.step for r in results.values()
                    if r.stage != plan.DATA_STAGE and not r.run_id]
        extra.append("stage.run_ids=[" + ",".join(quote(i) for i in ids) + "]")
    tags = [f"++tracking.tags.reproduce_step={quote(step.name)}",
            f"++tracking.tags.reproduce_experiment={quote(experiment)}"]
    if parent_id:
        tags.append(f"tracking.parent_run_id={parent_id}")
    return [*step.overrides, *tracking, *extra, *tags], waiting
