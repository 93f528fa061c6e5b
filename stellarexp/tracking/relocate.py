"""A copied or moved local store: point its recorded locations at where it is now.

MLflow stores absolute locations in its database: each experiment's artifact location, each
run's artifact URI, each registered model version's source, and our own tags that name folders
(``job_dir``, ``checkpoint_dir``, ``data_path``). A copy of ``$STELLAREXP_HOME`` would read and
write the original's folders (and find nothing, without an error, once the original is gone).

Beside each SQLite database a small record, ``<database>.location.json``, keeps the folder the
database was last used in and the home it belongs to. When a job opens the database elsewhere,
:func:`relocate` rewrites every stored location under the old folder (and under the old home)
to the same place under the new one, in one transaction, and logs what it did. Parameters stay
as they were logged: they record what a run was given.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from urllib.parse import unquote

from stellarexp.io_utils import file_lock, write_text_atomic

log = logging.getLogger(__name__)

# (table, column) pairs that hold absolute locations
LOCATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
    ("tags", "value"),
    ("model_version_tags", "value"),
)
RECORD_SUFFIX = ".location.json"


def record_path(db: Path) -> Path:
    """The location record kept beside the database ``db``."""
    return db.with_name(db.name + RECORD_SUFFIX)


def _forms(old: str, new: str) -> list[tuple[str, str]]:
    """The ways a folder is written in the store: a plain path, a ``file://`` path, and the
    percent-encoded URI ``Path.as_uri`` gives (``ensure_experiment`` writes that one)."""
    forms = [(Path(old).as_uri(), Path(new).as_uri()), ("file://" + old, "file://" + new), (old, new)]
    return list(dict.fromkeys(forms))


def _moved(old: str, new: str, value: str) -> str | None:
    """``value`` with the folder ``old`` replaced by ``new`` (in any of :func:`_forms`)."""
    for head, repl in _forms(old, new):
        if value == head or value.startswith(head + "/"):
            return repl + value[len(head):]
    return None


def _rewrite(con: sqlite3.Connection, pairs: list[tuple[str, str]]) -> int:
    """Rewrite every location column under an old folder; return the number of values changed."""
    changed = 0
    for table, column in LOCATION_COLUMNS:
        columns = {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}
        if column not in columns:  # a table or column this schema version does not have
            continue
        rows: dict[int, str] = {}
        for old, new in pairs:  # every candidate first: a value is rewritten once
            for head, _ in _forms(old, new):
                rows.update(con.execute(f'SELECT rowid, "{column}" FROM "{table}" WHERE instr("{column}", ?) > 0',
                                        (head,)).fetchall())
        for rowid, value in rows.items():
            # the longest old folder that holds the value (a copy may sit inside its original)
            for o, n in sorted(pairs, key=lambda p: -len(p[0])):
                new_value = _moved(o, n, value)
                if new_value is not None:
                    con.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE rowid = ?', (new_value, rowid))
                    changed += 1
                    break
    return changed


def _recorded_by_mlflow(db: Path) -> dict | None:
    """Where a database without a location record was last used, read from its experiments'
    artifact locations in the home layout (``<home>/mlruns/artifacts/<experiment>``)."""
    marker = "/mlruns/artifacts/"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute("SELECT artifact_location FROM experiments").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    for (location,) in rows:
        path = unquote(str(location or "").removeprefix("file://"))
        if marker in path:
            old_home = path.split(marker)[0]
            return {"store_dir": old_home + "/mlruns", "home": old_home}
    return None


def relocate(db: Path, home: Path | None) -> int:
    """Point the locations stored in SQLite database ``db`` at its present folder.

    Parameters
    ----------
    db : pathlib.Path
        The MLflow SQLite database.
    home : pathlib.Path or None
        The stellarexp home the database belongs to (``None`` for a database elsewhere).

    Returns
    -------
    int
        Stored values rewritten (0 when the database has not moved, or is new).
    """
    db = Path(db).resolve()
    here = {"store_dir": str(db.parent), "home": str(home) if home else None}
    record = record_path(db)
    with file_lock(db.with_name(db.name + ".location.lock")):
        try:
            before = json.loads(record.read_text())
        except (OSError, ValueError):
            # guessed only for a home's own database: a store elsewhere used to keep its
            # artifacts in the home, which did not move with it
            before = _recorded_by_mlflow(db) if db.is_file() and home is not None else None
        if before == here:
            return 0
        if isinstance(before, dict) and before.get("store_dir") == here["store_dir"] and here["home"] is None:
            return 0  # another home's database opened by name: keep its record
        changed = 0
        if isinstance(before, dict) and db.is_file():
            pairs = [(str(before.get("store_dir")), here["store_dir"])]
            if before.get("home") and here["home"]:
                pairs.append((str(before["home"]), here["home"]))
            pairs = [(o, n) for o, n in pairs if o and o != "None" and o != n]
            if pairs:
                con = sqlite3.connect(str(db), timeout=30)
                try:
                    with con:
                        changed = _rewrite(con, pairs)
                finally:
                    con.close()
                log.warning("the tracking store %s was moved or copied from %s: %d stored locations now "
                            "point into %s", db, before.get("store_dir"), changed, db.parent)
        write_text_atomic(record, json.dumps(here, indent=1))
    return changed
