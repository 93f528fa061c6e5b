"""A full disk while writing an artifact: a clear error, and no half-written file in the store.

MLflow copies artifacts into a local store with a plain copy: when the disk fills up, the copy
stops midway and leaves a truncated file that a later download or the UI would serve as if it
were whole. :func:`guard` turns ``ENOSPC``/``EDQUOT`` into :class:`ArtifactStoreFull`, which
names the run, the artifact, the folder and what to do, after removing the truncated copies.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

FULL = (errno.ENOSPC, errno.EDQUOT)


class ArtifactStoreFull(OSError):
    """No space left on the device of the artifact store (the run is ended FAILED)."""


def _local_root(artifact_uri: str) -> Path | None:
    if artifact_uri.startswith("file:"):
        return Path(unquote(urlparse(artifact_uri).path))
    if "://" not in artifact_uri:
        return Path(artifact_uri)
    return None


def _remove_truncated(src: Path | None, dest: Path) -> list[Path]:
    """Delete ``dest`` files that are not complete copies of ``src`` (all of them without src)."""
    pairs: list[tuple[Path | None, Path]]
    if src is not None and src.is_dir():
        pairs = [(f, dest / f.relative_to(src)) for f in src.rglob("*") if f.is_file()]
    else:
        pairs = [(src, dest)]
    removed = []
    for s, d in pairs:
        if d.is_file() and (s is None or d.stat().st_size != s.stat().st_size):
            with contextlib.suppress(OSError):
                d.unlink()
                removed.append(d)
    return removed


@contextlib.contextmanager
def guard(client, run_id: str, artifact: str, src: str | os.PathLike | None = None) -> Iterator[None]:
    """Translate a full disk during an artifact write into :class:`ArtifactStoreFull`.

    Parameters
    ----------
    client : mlflow.MlflowClient
    run_id : str
    artifact : str
        Path of the artifact inside the run (file, or folder for a folder upload).
    src : path-like, optional
        The local file or folder being uploaded (``None`` for text written by MLflow).
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in FULL or isinstance(exc, ArtifactStoreFull):
            raise
        try:
            root = _local_root(client.get_run(run_id).info.artifact_uri)
        except Exception:  # noqa: BLE001 - the database may sit on the full disk too
            root = None
        where, removed = "the artifact store", []
        if root is not None:
            dest = root / artifact
            where = str(dest.parent)
            removed = _remove_truncated(Path(src) if src is not None else None, dest)
        note = f"; removed {len(removed)} truncated file(s)" if removed else ""
        raise ArtifactStoreFull(
            exc.errno, f"no space left on the device of {where} while writing artifact "
            f"{artifact!r} of MLflow run {run_id}{note}. Free disk space there, or point new "
            "experiments at another disk with tracking.artifact_root=/other/disk (or "
            "STELLAREXP_HOME), then rerun the job; the run is marked FAILED") from exc
