"""The params a job's run logs: its config flattened to dotted keys with MLflow-safe values."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from stellarexp.constants import BANDS

# MLflow's limit (mlflow.utils.validation); fixed here so --help never imports mlflow.
MAX_PARAM_VALUE = 6000

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")

# Config keys not logged as params: the table of every survey size (``data.size`` names the one
# used) and the split's folds (``split.name`` names them; conf/split/<name>.yaml lists them); the
# full config is logged as ``config/config.yaml``. With per-band settings logged as one param
# each (below), a run's params stay under MLflow's 100 per request and the runs table shows what
# defines the run.
PARAM_SKIP_PREFIXES: tuple[str, ...] = ("data.sizes.", "split.folds.")


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


def run_params(cfg: Mapping) -> dict[str, str]:
    """The params a run logs: the flattened config without :data:`PARAM_SKIP_PREFIXES` keys, and
    a setting given per SDSS band (keys ``u, g, r, i, z``) as one JSON param."""
    flat = {k: v for k, v in flatten(cfg).items() if not k.startswith(PARAM_SKIP_PREFIXES)}
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
