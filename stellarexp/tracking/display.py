"""What the MLflow UI shows of a run: a short readable name, and Markdown that renders as written.

The runs table cuts a name at about :data:`MAX_RUN_NAME` characters, so a name holds what tells
runs apart (stage, model, features, target, a sweep's trial number) and nothing else. MLflow
renders a run's description (the ``mlflow.note.content`` tag) with showdown, where
``[Fe/H] (dex)`` is a link whose text is ``Fe/H``; :func:`escape_brackets` keeps such text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

STUDY_TAG, TRIAL_TAG = "optuna_study", "optuna_trial"  # a sweep's child runs carry both
# about what the runs table's name column shows at its default width (measured with
# tests/test_browser_ui.py, docs/tracking.md); longer names are cut there, not here
MAX_RUN_NAME = 40


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
    ``baseline lightgbm mag logg trial 12``.

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
