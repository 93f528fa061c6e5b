"""What a reproduce did, as text: each step's result, the step table, the plan a dry run prints
and the parent run's description (within MLflow's longest tag value)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from stellarexp.reproduce.plan import Step
from stellarexp.tracking.display import escape_brackets

NOTE_LIMIT = 8000  # MLflow's longest tag value: the parent run's description must fit


@dataclass
class StepResult:
    """What happened to one step: ``ran``, ``reused``, ``failed``, ``planned`` (dry run)."""

    step: str
    stage: str
    status: str
    run_id: str | None = None
    config_hash: str | None = None
    seconds: float = 0.0
    note: str = ""


def steps_markdown(results: Iterable[StepResult]) -> str:
    """The step table (status, run, seconds) as Markdown.

    Parameters
    ----------
    results : iterable of StepResult
        The steps' results, in the plan's order.

    Returns
    -------
    str
    """
    lines = ["| step | stage | status | run | seconds | note |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.step} | {r.stage} | {r.status} | {r.run_id or ''} | "
                     f"{r.seconds:g} | {r.note} |")
    return "\n".join(lines)


def plan_text(name: str, trainer: str, tune: bool, steps: Sequence[Step],
              results: Mapping[str, StepResult]) -> str:
    """The plan as printed by a dry run: each step's stage, overrides and status.

    Parameters
    ----------
    name : str
        The experiment's name.
    trainer : str
        The trainer the image steps use.
    tune : bool
        Whether the baselines are tuned first (``tune=true``).
    steps : sequence of Step
        The plan.
    results : mapping
        Step name -> its (planned) :class:`StepResult`.

    Returns
    -------
    str
    """
    tune_text = ", tune=true" if tune else ""
    lines = [f"experiment {name} (trainer={trainer}{tune_text}): {len(steps)} steps"]
    for i, step in enumerate(steps, 1):
        r = results.get(step.name)
        status = (r.note or r.status) if r else ""
        lines.append(f"{i:2d}. {step.name:<24s} stage={step.stage:<16s} {status}")
        own = [o for o in step.overrides if not o.startswith(("trainer=", "stage="))]
        lines.append(f"      overrides: {' '.join(own)}")
        for key, target in step.refs.items():
            lines.append(f"      {key} <- run of step '{target}'")
        if step.collect:
            lines.append("      stage.run_ids <- the runs of every earlier step")
    return "\n".join(lines)


def parent_description(report_run_id: str, text: str, steps_table: str,
                       limit: int = NOTE_LIMIT) -> str:
    """The parent run's description: the report, then the steps, within MLflow's tag limit.

    A report too long for it loses its figure links first (they stay in the artifact
    ``report/comparison.md``), then its end. Square brackets outside links are escaped, so
    MLflow shows ``[Fe/H] (dex)`` as written and not as a link
    (:func:`stellarexp.tracking.display.escape_brackets`).

    Parameters
    ----------
    report_run_id : str
        The run of the report step.
    text : str
        The report's Markdown (``comparison/comparison.md`` of that run).
    steps_table : str
        The step table (:func:`steps_markdown`).
    limit : int
        The longest description, in characters.

    Returns
    -------
    str
    """
    head = f"Report: MLflow run {report_run_id} (artifacts comparison/).\n\n"
    steps = f"\n\nSteps:\n\n{escape_brackets(steps_table)}"
    text = escape_brackets(text)
    if len(head) + len(text) + len(steps) > limit and "\nFigures\n" in text:
        text = (text[:text.index("\nFigures\n")]
                + "\nFigures: links in the artifact report/comparison.md\n")
    room = limit - len(head) - len(steps)
    if len(text) > room:
        cut = "\n... (cut; the whole report is the artifact report/comparison.md)"
        text = text[:max(room - len(cut), 0)] + cut
    return (head + text + steps)[:limit]
