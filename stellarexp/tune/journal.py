"""Keep an Optuna journal file usable after a torn write (a full disk, a killed writer).

An Optuna journal is one JSON operation per line, shared by every study and worker. A write cut
short leaves a torn last line; the next append is glued to it, and from then on every study in
the file fails to load with a bare ``JSONDecodeError``. :func:`repair_journal` finds torn
records, moves their bytes to ``<journal>.torn-<time>`` (nothing is thrown away), keeps every
complete operation (also one glued behind a torn record) and says what it did. Callers hold the
sweep's lock (``ask_lock``) while it runs.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from stellarexp.io_utils import atomic_path


def _operation(raw: bytes) -> bool:
    try:
        value = json.loads(raw)
    except ValueError:
        return False
    return isinstance(value, dict) and "op_code" in value


def _split(raw: bytes) -> tuple[bytes, bytes | None]:
    """``(torn prefix, complete operation glued behind it or None)`` of a bad line."""
    for match in re.finditer(rb"\{", raw):
        if match.start() and _operation(raw[match.start():]):
            return raw[:match.start()], raw[match.start():]
    return raw, None


def repair_journal(path) -> str | None:
    """Move torn records out of an Optuna journal file.

    Parameters
    ----------
    path : path-like
        The journal file (absent or empty: nothing to do).

    Returns
    -------
    str or None
        What was moved where, for the log; None when the file was intact.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail_torn = lines[-1] != b""  # a complete file ends with a newline
    good, torn = [], []
    for raw in lines[:-1] + ([lines[-1]] if tail_torn else []):
        if _operation(raw):
            good.append(raw)
            continue
        prefix, glued = _split(raw)
        torn.append(prefix)
        if glued is not None:
            good.append(glued)
    if not torn:
        return None
    backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
    with atomic_path(backup) as tmp:
        tmp.write_bytes(b"\n".join(torn) + b"\n")
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"\n".join(good) + b"\n")
    return (f"{path}: {len(torn)} torn record(s) ({sum(len(t) for t in torn)} bytes, e.g. a write cut "
            f"short by a full disk or a killed worker) moved to {backup}; {len(good)} complete "
            "operations kept. Trials that torn records belonged to may show as RUNNING and are "
            "failed by the liveness check.")
