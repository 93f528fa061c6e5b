"""Study names: one study per objective (study id, target, split, data fingerprint, other
objective-changing overrides), so re-running a command finds its study and different
objectives never share one.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable

from omegaconf import OmegaConf

from stellarexp.config import register_resolvers
from stellarexp.tune.search_space import parse_override
from stellarexp.tune.studies import SweepError

log = logging.getLogger(__name__)



def check_single_target(cfg, key: str = "target") -> None:
    """Refuse ``target=all`` (or a list): a study optimises one metric of one target."""

    target = OmegaConf.select(cfg, key, default=None) if cfg is not None else None
    if target is None and (cfg is None or key not in cfg):
        return
    if target is None or OmegaConf.is_list(target) or str(target) == "all":
        raise SweepError(
            f"an Optuna sweep tunes one target at a time, got {key}={target}: run one study per "
            f"target, e.g. `{key}=teff`, `{key}=logg` and `{key}=fe_h` (each is its own study)")


def data_identity(cfg, prepare: bool = True) -> str | None:
    """A short identity of the job config's data: ``<data name>-<fingerprint[:10]>``.

    The fingerprint is the dataset's content hash. A synthetic dataset that does not exist yet is
    built first when ``prepare`` (so trials do not race to build it, and the name stays the same
    when the study is resumed); otherwise, or when it cannot be read, the data name and size
    stand in. ``None`` when the config has no ``data`` node.
    """
    data = OmegaConf.select(cfg, "data", default=None) if cfg is not None else None
    if data is None:
        return None
    name = str(data.get("name", "data"))
    fingerprint = None
    try:
        from stellarexp.data.fingerprint import data_fingerprint

        fingerprint = data_fingerprint(data)
        if fingerprint is None and prepare:
            from stellarexp.data.table import load_stars

            register_resolvers()
            fingerprint = load_stars(data).fingerprint
    except Exception as exc:  # noqa: BLE001 - naming must not hide the real error of a trial
        log.warning("data fingerprint unavailable (%s: %s); naming the study by data name/size",
                    type(exc).__name__, exc)
    if fingerprint and fingerprint != "unknown":
        return f"{name}-{str(fingerprint)[:10]}"
    size = data.get("size") if "size" in data else None
    return f"{name}-{size}" if size is not None else name


_NAME_PARTS = ("target", "split.name")


def overrides_signature(overrides: Iterable[str], ignore: Iterable[str] = (),
                        ignore_exact: Iterable[str] = ()) -> str | None:
    """Short hash of the overrides that change the objective, ``None`` when there are none.

    Overrides of a key in ``ignore`` or below it (``tracking`` covers ``tracking.uri``), and of a
    key in ``ignore_exact``, are left out: they are named otherwise (target, split, data
    fingerprint, the study's own ``model=...``) or do not change the objective (threads, tracking).
    """
    ignore, exact = tuple(ignore), set(ignore_exact)
    kept = []
    for line in overrides:
        key = parse_override(line).key_or_group
        if key in exact or any(key == i or key.startswith((f"{i}.", f"{i}@")) for i in ignore):
            continue
        kept.append(line.lstrip("+"))
    if not kept:
        return None
    return "o" + hashlib.sha256("\n".join(sorted(kept)).encode()).hexdigest()[:7]


def study_name(study_id: str, cfg=None, data: str | None = None, variant: str | None = None) -> str:
    """``<study>-<target>-<split>-<data identity>[-<variant>]``, leaving out missing parts.

    The study id carries model and features (``xgboost_color``); with target, split, the data
    fingerprint and a hash of any other objective-changing overrides (``variant``, see
    :func:`overrides_signature`) in the name, different objectives never share one study while
    re-running the same command finds the same study.
    """
    parts = [study_id]
    for key in _NAME_PARTS:
        value = OmegaConf.select(cfg, key, default=None) if cfg is not None else None
        if value is not None:
            parts.append(str(value))
    parts += [p for p in (data, variant) if p]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))
