"""The params a job's run logs: a curated few (what defines the run and what was varied) with
MLflow-safe values; the whole config goes to the run's ``config/config.yaml`` artifact.

Logging the flattened config (~100 keys a run, hundreds over a store: every model's
per-target hyperparameters, the survey generator's settings) filled the runs table and the
compare view with columns that never differ; the curated set keeps them to what tells runs
apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from stellarexp.constants import BANDS
from stellarexp.tracking.display import select, skipped_tags

# MLflow's limit (mlflow.utils.validation); fixed here so --help never imports mlflow.
MAX_PARAM_VALUE = 6000

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")

# Keys every run logs when its config has them; a key under a tag the job skips
# (``stage.skip_tags``, features for an image model) is left out.
RUN_KEYS: tuple[str, ...] = ("stage.name", "model.name", "model.arch", "features.name", "target",
                             "data.name", "data.size", "split.name", "seed", "trainer.name")
# A stage's own settings that define its runs (the rest is in config/config.yaml). Read back:
# the package stage reads ``stage.combine`` of the logg_heads run.
_HEAD_KEYS = ("stage.backbone.run_id", "stage.hidden", "stage.prior.kind", "stage.lr",
              "stage.max_epochs")
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "backbone": ("stage.max_epochs", "stage.lr", "stage.batch_size", "stage.scheduler",
                 "stage.averaging.k"),
    "head": _HEAD_KEYS,
    "logg_classifier": (*_HEAD_KEYS, "stage.threshold"),
    "logg_heads": (*_HEAD_KEYS, "stage.threshold", "stage.combine", "stage.classifier.run_id"),
    "package": ("stage.runs.head", "stage.logg", "stage.n_samples"),
    "perturb": ("stage.head.run_id", "stage.n_stars"),
    "report": ("stage.run_ids", "stage.sources"),
}
# Overrides of these never become params: bookkeeping (the parent run, tags, where runs go),
# recorded as tags or in config/overrides.yaml.
VARIED_SKIP: tuple[str, ...] = ("hydra", "tracking")


def param_value(value) -> str:
    """One config value as an MLflow param value.

    Parameters
    ----------
    value : object
        A leaf of the config.

    Returns
    -------
    str
        ``null`` for ``None``, JSON for a list or tuple, else ``str(value)``; cut with ``...`` to
        :data:`MAX_PARAM_VALUE` characters.
    """
    if value is None:
        text = "null"
    elif isinstance(value, (list, tuple)):
        text = json.dumps(list(value), default=str)
    else:
        text = str(value)
    if len(text) > MAX_PARAM_VALUE:
        text = text[: MAX_PARAM_VALUE - 3] + "..."
    return text


def override_keys(overrides: Iterable[str]) -> list[str]:
    """The config keys a job's command-line overrides set (``+``/``++`` stripped; deletions,
    ``group@package`` choices and :data:`VARIED_SKIP` keys left out), in order."""
    keys = []
    for text in overrides:
        key = str(text).split("=", 1)[0].strip().lstrip("+")
        if "=" not in str(text) or not key or key.startswith("~") or "@" in key or "/" in key:
            continue
        if key.split(".", 1)[0] not in VARIED_SKIP and key not in keys:
            keys.append(key)
    return keys


def run_params(cfg: Mapping, overrides: Iterable[str] = ()) -> dict[str, str]:
    """The params a run logs: :data:`RUN_KEYS`, the stage's :data:`STAGE_KEYS` and every key the
    job's overrides set (a sweep's trial values among them).

    The config hash stays a tag (``config_hash``): as a param it would be the first axis of
    MLflow's compare plot (params that differ, sorted), with values that mean nothing there.

    Parameters
    ----------
    cfg : mapping
        The job's resolved config, credentials already redacted.
    overrides : iterable of str
        The job's command-line overrides. A config group's choice (``model=xgboost``) gives its
        ``name``; a mapping given whole, its leaves.

    Returns
    -------
    dict
        Dotted key -> value; a setting given per SDSS band (keys ``u, g, r, i, z``) is one JSON
        value under its own key.
    """
    flat = band_grouped(flatten(cfg))
    skip = skipped_tags(cfg)
    wanted = [k for k in RUN_KEYS if k.split(".", 1)[0] not in skip]
    wanted += STAGE_KEYS.get(str(select(cfg, "stage.name")), ())
    for key in override_keys(overrides):
        wanted += _keys_under(flat, _BAD_KEY_CHARS.sub("_", key))
    return {k: flat[k] for k in wanted if k in flat}


def _keys_under(flat: Mapping[str, str], key: str) -> list[str]:
    """The logged keys for an override of ``key``: itself, a group's ``name``, the leaves of a
    mapping, or the per-band JSON value that holds it."""
    if key in flat:
        return [key]
    if f"{key}.name" in flat:
        return [f"{key}.name"]
    below = [k for k in flat if k.startswith(f"{key}.")]
    if below:
        return below
    stem = key.rsplit(".", 1)[0]
    return [stem] if "." in key and stem in flat else []


def band_grouped(flat: Mapping[str, str]) -> dict[str, str]:
    """``flat`` with each setting given per SDSS band (keys ``u, g, r, i, z`` and nothing else
    below one stem) as one JSON param under the stem."""
    flat = dict(flat)
    stems = {k.rsplit(".", 1)[0] for k in flat if "." in k}
    for stem in sorted(stems):
        keys = [f"{stem}.{b}" for b in BANDS]
        if all(k in flat for k in keys) and not any(k.startswith(f"{stem}.") and k not in keys for k in flat):
            flat[stem] = json.dumps({b: _json_number(flat.pop(f"{stem}.{b}")) for b in BANDS})
    return flat


def _json_number(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, str]:
    """Flatten a nested mapping to dotted keys with MLflow-safe string values.

    Lists stay one value (JSON); values over MLflow's 6000 characters are cut with ``...``;
    characters MLflow refuses in keys become ``_``. Empty mappings give no entry.
    """
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = _BAD_KEY_CHARS.sub("_", f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = param_value(value)
    return out
