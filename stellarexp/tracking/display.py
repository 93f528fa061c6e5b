"""What the MLflow UI shows of runs: short readable names, a saved view of the runs table on
the metrics and params that matter, the order metrics are logged in, and Markdown descriptions
that render as written.

- Names hold what tells runs apart (stage, model, features, target, a sweep's trial number).
- MLflow 3's runs table opens on no metric or param column; every experiment stellarexp uses
  gets the saved view :data:`VIEW_ID` (the table's *Views* menu, or :func:`view_url`) with the
  paper's sigmas, the run-defining params and a name column wide enough for the names.
- MLflow's compare page plots the first metric a run logged: :func:`headline_first` puts the
  paper's sigmas first in a batch.
- MLflow renders a run's description (``mlflow.note.content``) with showdown, where
  ``[Fe/H] (dex)`` is a link whose text is ``Fe/H``; :func:`escape_brackets` keeps such text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from stellarexp.constants import LABELS, PAPER_HEAD_METHOD

STUDY_TAG, TRIAL_TAG = "optuna_study", "optuna_trial"  # a sweep's child runs carry both
# the longest name the saved view's name column shows whole in a nested (child) row
MAX_RUN_NAME = 40
NAME_WIDTH_PX = 360  # that column's width
# the paper's metric (DESIGN "Metric names"; stellarexp.evaluate.metrics.metric_name), the test
# subset first (split=holdout reports it)
HEADLINE_METRICS: tuple[str, ...] = tuple(f"{s}/sigma_{t}" for s in ("test", "val") for t in LABELS)
VIEW_ID = "stellarexp"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"  # MLflow's saved views are experiment tags
VIEW_NAME = "stellarexp: sigmas and run params"
VIEW_PARAMS: tuple[str, ...] = ("model.name", "features.name", "target", "split.name", "data.size")


def select(cfg: Mapping, dotted: str) -> Any:
    """The value at ``dotted`` (``a.b.c``) in nested mappings, or ``None`` when absent."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def skipped_tags(cfg: Mapping) -> set[str]:
    """The config tags that do not apply to the job: ``stage.skip_tags``, and ``features`` for
    an image model (only the tree baselines read tabular features)."""
    skip = {str(t) for t in select(cfg, "stage.skip_tags") or ()}
    if select(cfg, "model.family") == "image":
        skip.add("features")
    return skip


def run_name(cfg: Mapping) -> str:
    """The run's name: ``stage.run_name`` when set, else what tells the job apart.

    Stage, model, features (tree baselines), target (left out when ``all``) and, for a sweep's
    trial, ``trial <n>``, joined by spaces: ``baseline xgboost color teff``, ``head convit``,
    ``baseline lightgbm mag logg trial 12``, ``head convit ensemble`` (a head's ``stage.method``
    when it is not the paper's), ``head convit parallax`` (its ``model.side_inputs``).

    Parameters
    ----------
    cfg : mapping
        The job's resolved config.

    Returns
    -------
    str
    """
    explicit = select(cfg, "stage.run_name")
    if explicit:
        return str(explicit)
    skip = skipped_tags(cfg)
    parts = [select(cfg, "stage.name")]
    for tag, key in (("model", "model.name"), ("features", "features.name"), ("target", "target")):
        value = select(cfg, key)
        if tag not in skip and value not in (None, "all"):
            parts.append(value)
    method = select(cfg, "stage.method")  # a head's uncertainty method, when not the paper's
    if method not in (None, PAPER_HEAD_METHOD):
        parts.append(method)
    side = select(cfg, "model.side_inputs")  # the image heads' side inputs (docs/parallax.md)
    if side:
        parts.append("+".join(str(s) for s in side))
    trial = select(cfg, f"tracking.tags.{TRIAL_TAG}")
    if trial is not None:
        parts.append(f"trial {trial}")
    return " ".join(str(p) for p in parts if p is not None)


def sweep_run_name(cfg: Mapping) -> str:
    """The name of a sweep's parent run: ``sweep`` and its trials' name without the trial
    number (``sweep baseline random_forest color teff``); the study's full name is the
    ``optuna_study`` tag."""
    return f"sweep {run_name({**cfg, 'tracking': {}})}"


# an inline link or image, [text](target), which must stay one
_LINK = re.compile(r"!?\[[^\[\]\n]*\]\([^()\s]*\)")
_BRACKET = re.compile(r"(?<!\\)([\[\]])")


def escape_brackets(markdown: str) -> str:
    """``markdown`` with every square bracket outside an inline link escaped (``\\[Fe/H\\]``).

    Showdown (MLflow's renderer) reads ``[Fe/H] (dex)`` as a link and ``[a, b]`` next to a
    reference as one; escaped, both show as written. Inline links ``[name](url)`` are kept.

    Parameters
    ----------
    markdown : str

    Returns
    -------
    str
    """
    out, last = [], 0
    for link in _LINK.finditer(markdown):
        out.append(_BRACKET.sub(r"\\\1", markdown[last:link.start()]))
        out.append(link.group(0))
        last = link.end()
    out.append(_BRACKET.sub(r"\\\1", markdown[last:]))
    return "".join(out)


def headline_first(keys: Iterable[str]) -> list[str]:
    """``keys`` with :data:`HEADLINE_METRICS` first (in that order), the rest as given."""
    keys = list(keys)
    rank = {k: i for i, k in enumerate(HEADLINE_METRICS)}
    return sorted(keys, key=lambda k: rank.get(k, len(rank)))


def _column(kind: str, name: str) -> str:
    """A runs-table column id as MLflow writes it (``metrics.`val/sigma_teff```)."""
    return f"{kind}.`{name}`"


def runs_view_state() -> dict:
    """The runs table's state in the saved view: headline sigmas, :data:`VIEW_PARAMS`, a name
    column :data:`NAME_WIDTH_PX` wide (columns a run does not have are left out by MLflow)."""
    name = _column("attributes", "Run Name")
    columns = ([_column("metrics", m) for m in HEADLINE_METRICS]
               + [_column("params", p) for p in VIEW_PARAMS])
    # MLflow applies widths only to the columns listed in columnOrder
    order = [name, "runDateAndNestInfo", "duration", *columns]
    # a 1600-pixel window shows the sigmas, model, features and target without scrolling
    widths = {name: NAME_WIDTH_PX, **{c: 112 for c in columns}}
    return {"selectedColumns": [name, *columns], "columnOrder": order, "columnWidths": widths}


def view_tag_value(now_ms: int) -> str:
    """The :data:`VIEW_TAG` experiment tag: MLflow's saved-view envelope around
    :func:`runs_view_state`."""
    return json.dumps({"name": VIEW_NAME, "createdAt": int(now_ms), "updatedAt": int(now_ms),
                       "state": json.dumps(runs_view_state())})


def view_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table opened on the saved view (``base``: the UI's address)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_ID}"
