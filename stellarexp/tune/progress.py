"""What a sweep prints while it runs: one line per finished trial, read from the Optuna storage.

Each worker prints a line for each trial it tells (a worker's own trials only, so several
workers sharing a study each print theirs)::

    [trial 3/30] #2 value=0.2413  best=0.2301 (#1)  12.4 s
    [trial 4/30] #3 pruned at step 11 (0.3127)  best=0.2301 (#1)  6.0 s
    [trial 5/30] #4 failed: RuntimeError: ...  best=0.2301 (#1)  0.8 s

``k/n``: ``k`` trials of the study are finished (complete, pruned or failed, by any worker)
out of its ``n_trials`` (the loop tells and prints under the workers' ask lock, so each ``k``
appears once across workers); ``#N`` is the trial's Optuna number (the ``optuna_trial`` tag of its
MLflow run); ``best`` is the study's best value so far and the trial that holds it; the time
runs from the trial's ask to its tell (with ``n_jobs`` > 1, the trials of one batch are told
together when the slowest of them ends).
"""

from __future__ import annotations

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

REASON_CHARS = 160  # a failure's reason on the line; the full text is the trial's fail_reason


def _frozen(trials: list[FrozenTrial], number: int) -> FrozenTrial | None:
    if 0 <= number < len(trials) and trials[number].number == number:
        return trials[number]
    return next((t for t in trials if t.number == number), None)


def best_so_far(trials: list[FrozenTrial], direction: StudyDirection) -> FrozenTrial | None:
    """The complete trial with the best value (the first of equals), or ``None``."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not done:
        return None
    pick = min if direction == StudyDirection.MINIMIZE else max
    return pick(done, key=lambda t: t.value)


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def trial_line(study, number: int, n_trials: int, reason: str | None = None) -> str:
    """The console line of finished trial ``number`` of ``study`` (see the module docstring).

    Parameters
    ----------
    study : optuna.Study
        The study, after the trial was told.
    number : int
        The trial's Optuna number.
    n_trials : int
        The study's planned total.
    reason : str, optional
        Why the trial failed (shortened to one line of at most ``REASON_CHARS`` characters).
    """
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state.is_finished() for t in trials)
    trial = _frozen(trials, number)
    state = trial.state if trial is not None else TrialState.FAIL
    if state == TrialState.COMPLETE:
        what = f"value={_fmt(trial.value)}"
    elif state == TrialState.PRUNED:
        steps = trial.intermediate_values if trial is not None else {}
        last = max(steps) if steps else None
        what = "pruned" if last is None else f"pruned at step {last} ({_fmt(steps[last])})"
    else:
        text = " ".join(str(reason or "no reason recorded").split())
        if len(text) > REASON_CHARS:
            text = text[:REASON_CHARS - 3] + "..."
        what = f"failed: {text}"
    best = best_so_far(trials, study.direction)
    best_text = "best=none yet" if best is None else f"best={_fmt(best.value)} (#{best.number})"
    line = f"[trial {finished}/{n_trials}] #{number} {what}  {best_text}"
    if trial is not None and trial.datetime_start and trial.datetime_complete:
        line += f"  {(trial.datetime_complete - trial.datetime_start).total_seconds():.1f} s"
    return line
