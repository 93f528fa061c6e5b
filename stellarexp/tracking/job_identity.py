"""What a job's run is known by, all from its resolved config: its tags (config keys, git commit,
host) and its ``config_hash`` (its name: :mod:`stellarexp.tracking.display`)."""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import subprocess
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from stellarexp import home as _home
from stellarexp.data.fingerprint import data_fingerprint
from stellarexp.tracking import redact, stale
from stellarexp.tracking.display import select
from stellarexp.tracking.params import flatten

# config key -> tag name; the tags every run carries (DESIGN "MLflow records every run")
CONFIG_TAGS = {
    "stage": "stage.name",
    "model": "model.name",
    "data": "data.name",
    "features": "features.name",
    "target": "target",
    "split": "split.name",
    "seed": "seed",
}


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Commit of the source checkout (``-dirty`` appended with local changes), or ``unknown``.

    Looked up once per process (two ``git`` subprocesses): the code a process runs is the code
    it started with.
    """
    root = _home.source_root()
    if root is None or not (root / ".git").exists():
        return "unknown"
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else (sha or "unknown")


def config_tags(cfg: Mapping) -> dict[str, str]:
    """Tags from the resolved config (stage, model, data, features, target, split, seed) plus
    git commit and host. Keys listed in ``stage.skip_tags`` are left out."""
    skip = set(select(cfg, "stage.skip_tags") or ())
    tags = {}
    for tag, key in CONFIG_TAGS.items():
        value = select(cfg, key)
        if tag not in skip and value is not None:
            tags[tag] = str(value)
    tags["git_commit"] = git_commit()
    tags["host"] = socket.gethostname()
    for key, value in (select(cfg, "tracking.tags") or {}).items():
        tags[str(key)] = str(value)
    return tags


def job_config_hash(cfg: Mapping) -> str:
    """The ``config_hash`` tag of a job: its config without volatile keys plus its data fingerprint.

    Two jobs with one hash compute the same thing on the same data, so ``stellarexp.reproduce``
    reuses a FINISHED run instead of running the job again.
    """
    fingerprint = None
    if isinstance(cfg.get("data"), Mapping):
        with contextlib.suppress(Exception):  # no dataset yet: the hash says so (None)
            fingerprint = data_fingerprint(OmegaConf.create(dict(cfg["data"])))
    params = home_relative(flatten(redact.redact(dict(cfg))))
    return stale.config_hash({**params, "data_fingerprint": str(fingerprint)})


def home_relative(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the home folder in string values written ``$STELLAREXP_HOME``, so a
    copied or moved home gives its jobs the hashes they had."""
    pattern = re.compile(re.escape(str(_home.home())) + r"(?=/|$|[^\w.-])")
    return {k: pattern.sub("$STELLAREXP_HOME", v) if isinstance(v, str) else v for k, v in params.items()}
