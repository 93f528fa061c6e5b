"""What a sweep exports: the best trial's value, parameters, overrides and the command that
re-runs it (secrets masked).
"""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Iterable, Mapping

from optuna.trial import TrialState

from stellarexp.tracking.redact import redact_override
from stellarexp.tune.search_space import SearchParam

# user attribute of a trial killed before it reported and run again: it no longer counts
RETRIED_ATTR = "retried"


def rerun_command(overrides: Iterable[str]) -> str:
    """The command line that runs one job with ``overrides`` (the best trial's configuration)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        program = f"python -m {spec.name.removesuffix('.__main__')}"
    else:
        program = f"python {shlex.quote(sys.argv[0])}" if sys.argv and sys.argv[0] else "python"
    return " ".join([program, *(shlex.quote(o) for o in overrides)])



def best_summary(study, space: Mapping[str, SearchParam], base_overrides: list[str],
                 metric: str | None) -> dict | None:
    """What :func:`write_yaml_atomic` exports: best value, parameters, overrides and command
    (secrets in the overrides masked).

    Returns ``None`` while the study has no complete trial.
    """
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    best = study.best_trial
    param_overrides = []
    for key, value in best.params.items():
        param = space.get(key)
        param_overrides.append(param.override(value) if param else f"++{key}={value}")

    # exported and printed: a secret given on the command line shows as *** (README, Security)
    overrides = [redact_override(o) for o in (*base_overrides, *param_overrides)]
    counts = {s.name.lower(): sum(t.state == s for t in trials)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    # failed trials that were run again (their retry counts instead): not part of n_trials
    counts["retried"] = sum(t.state == TrialState.FAIL and bool(t.user_attrs.get(RETRIED_ATTR)) for t in trials)
    value = float(best.value)
    return {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "metric": metric,
        "best_value": value if math.isfinite(value) else str(value),
        "best_trial": best.number,
        "params": dict(best.params),
        "trials": counts,
        "overrides": overrides,
        "command": rerun_command(overrides),
    }


