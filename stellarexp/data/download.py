"""Fill the frame cache for a set of fields, and report or raise on what is still missing.

:func:`download_frames` fetches every frame not yet in the cache (in worker threads, giving up
early when the server cannot be reached at all) and reports what it fetched, found and missed;
:func:`ensure_frames` is the pipeline's entry: it checks the cache, downloads only when allowed,
and raises one :class:`FramesMissingError` that says how to provide what is missing. Where a
frame lives and what makes it usable is :mod:`stellarexp.data.frame_cache`; one HTTP download
is :mod:`stellarexp.data.frame_fetch`.

This module imports neither torch nor lightning.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import requests
from tqdm.auto import tqdm

from stellarexp.data.frame_cache import (
    FrameIntegrityError,
    check_frame,
    frame_cache_path,
    frame_url,
    requested_frames,
    resolve_base_url,
)
from stellarexp.data.frame_fetch import ServerUnreachableError, fetch_frame
from stellarexp.sdss import BANDS, SAS_BASE_URL

log = logging.getLogger(__name__)


class FramesMissingError(FileNotFoundError):
    """Frames needed by the pipeline are absent from the cache and could not be fetched.

    Attributes
    ----------
    failures : list of FrameFailure
        One entry per missing or unusable file, with the reason.
    missing : list of pathlib.Path
        The cache paths where the files are expected.
    """

    def __init__(self, message: str, failures: Iterable[FrameFailure] = ()):
        super().__init__(message)
        self.failures = list(failures)
        self.missing = [f.path for f in self.failures]


@dataclass(frozen=True)
class FrameFailure:
    """One frame that is not usable: where it should be, where it was sought, and why."""

    path: Path
    url: str
    reason: str
    attempts: int = 0


@dataclass
class DownloadReport:
    """Outcome of :func:`download_frames`.

    Attributes
    ----------
    fetched : list of pathlib.Path
        Files downloaded (and checked) by this call.
    present : list of pathlib.Path
        Files already in the cache (and, unless ``verify_present=False``, checked); not fetched.
    failed : list of FrameFailure
        Files that are still missing, with the reason.
    """

    fetched: list[Path] = field(default_factory=list)
    present: list[Path] = field(default_factory=list)
    failed: list[FrameFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every requested frame is now in the cache."""
        return not self.failed

    @property
    def paths(self) -> list[Path]:
        """Every usable frame path (present or fetched)."""
        return self.present + self.fetched

    def summary(self) -> str:
        """One line: counts of fetched, present and failed files."""
        n_fetched, n_present, n_failed = len(self.fetched), len(self.present), len(self.failed)
        return f"{n_fetched} fetched, {n_present} already present, {n_failed} failed"


def download_frames(
    fields: Iterable[tuple[int, int, int]],
    cache_dir,
    *,
    bands: Iterable[str] = BANDS,
    base_url: str | None = SAS_BASE_URL,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 1.0,
    session: requests.Session | None = None,
    workers: int = 2,
    verify_present: bool = True,
    progress: bool = True,
) -> DownloadReport:
    """Fetch the frames of ``fields`` into ``cache_dir``, skipping those already there.

    Parameters
    ----------
    fields : iterable of (run, camcol, field)
        SDSS fields; each contributes one file per band. Duplicates are fetched once.
    cache_dir : path-like
        Cache root; files go to ``<cache_dir>/frames/301/{run}/{camcol}/frame-...fits.bz2``.
    bands : iterable of str
        Bands to fetch (default all five).
    base_url : str, optional
        Root of a SAS-like tree, http(s) (default or ``None``:
        :data:`~stellarexp.data.frame_cache.DEFAULT_BASE_URL`, DR17).
    timeout : float
        Seconds to wait to connect and between received bytes (``requests`` semantics).
    retries : int
        Extra attempts after the first for transient failures (connection errors, timeouts,
        HTTP 408/429/5xx, truncated or corrupt bodies). 404 and other 4xx are not retried.
    backoff : float
        Wait before retry ``k`` (1-based) is ``backoff * 2**(k-1)`` seconds.
    session : requests.Session, optional
        Session to use (proxies, auth, adapters); a new one per worker thread by default.
    workers : int
        Concurrent downloads (threads).
    verify_present : bool
        Run :func:`check_frame` on files already in the cache; a file that fails is deleted and
        fetched again. ``False`` trusts any existing file (fast for large caches).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    DownloadReport
        ``fetched``, ``present`` and ``failed`` (with reasons). Nothing is raised for a failed
        file; see :func:`ensure_frames` for the raising variant.

    Notes
    -----
    When every attempt for a file fails to connect at all (no server, no network), the remaining
    files are not tried and are reported as failed with that reason, instead of waiting through
    the full backoff for each of them.
    """
    base_url = resolve_base_url(base_url)
    keys = requested_frames(fields, bands)
    report = DownloadReport()
    unreachable = threading.Event()
    unreachable_reason: list[str] = []
    local = threading.local()

    def get_session() -> requests.Session:
        if session is not None:
            return session
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    def one(key) -> tuple[str, Path, str | None, str, int]:
        dest = frame_cache_path(cache_dir, *key)
        url = frame_url(*key, base_url=base_url)
        if dest.is_file():
            if not verify_present:
                return "present", dest, None, url, 0
            try:
                check_frame(dest)
                return "present", dest, None, url, 0
            except FrameIntegrityError as exc:
                log.warning("cached frame %s is unusable (%s); fetching it again", dest, exc)
                dest.unlink(missing_ok=True)
        if unreachable.is_set():
            return "failed", dest, f"not attempted: {unreachable_reason[0]}", url, 0
        try:
            reason, attempts = fetch_frame(
                url, dest, get_session(), timeout=timeout, retries=retries, backoff=backoff
            )
        except ServerUnreachableError as exc:
            if not unreachable.is_set():
                unreachable_reason.append(f"{base_url} unreachable ({exc})")
                unreachable.set()
            return "failed", dest, f"{exc} (after {retries + 1} attempts)", url, retries + 1
        return ("failed" if reason else "fetched"), dest, reason, url, attempts

    results: dict[tuple, tuple] = {}
    with tqdm(total=len(keys), unit="frame", desc="SDSS frames", disable=not progress) as bar:

        def record(key, res):
            results[key] = res
            bar.update(1)
            bar.set_postfix_str(
                f"fetched {sum(r[0] == 'fetched' for r in results.values())}, "
                f"failed {sum(r[0] == 'failed' for r in results.values())}"
            )

        if workers <= 1 or len(keys) <= 1:
            for key in keys:
                record(key, one(key))
        else:
            with ThreadPoolExecutor(max_workers=int(workers)) as pool:
                futures = {pool.submit(one, key): key for key in keys}
                for fut in as_completed(futures):
                    record(futures[fut], fut.result())

    for key in keys:  # report in request order, whatever order threads finished in
        status, dest, reason, url, attempts = results[key]
        if status == "present":
            report.present.append(dest)
        elif status == "fetched":
            report.fetched.append(dest)
        else:
            report.failed.append(FrameFailure(dest, url, reason or "unknown", attempts))
    log.info("SDSS frames: %s", report.summary())
    return report


def missing_frames_message(
    failures: list[FrameFailure], cache_dir, *, base_url: str, download: bool
) -> str:
    """Human-readable explanation of missing frames and how to provide them.

    Parameters
    ----------
    failures : list of FrameFailure
    cache_dir : path-like
    base_url : str
    download : bool
        Whether downloading was enabled (changes the advice).

    Returns
    -------
    str
    """
    lines = [
        f"{len(failures)} SDSS frame file(s) missing or unusable in the frame cache {cache_dir}:"
    ]
    lines += [f"  {f.path}  <- {f.reason}" for f in failures]
    lines.append("Provide them in either way:")
    lines.append(
        "  - put the files at the paths above (layout <frame_root>/frames/301/{run}/{camcol}/"
        "frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2, as on the SAS);"
    )
    if download:
        lines.append(
            f"  - or fix the download: it used base URL {base_url}; check the network, or set"
            " data.base_url to a reachable mirror of the SAS frames/ tree."
        )
    else:
        lines.append(
            f"  - or set data.download=true to fetch them from {base_url} (data.base_url"
            " selects another server or mirror)."
        )
    return "\n".join(lines)


def ensure_frames(
    fields: Iterable[tuple[int, int, int]],
    cache_dir,
    *,
    bands: Iterable[str] = BANDS,
    download: bool = False,
    base_url: str | None = SAS_BASE_URL,
    verify_present: bool = True,
    **download_kwargs,
) -> DownloadReport:
    """Make sure every frame of ``fields`` is in the cache, or raise one clear error.

    Parameters
    ----------
    fields : iterable of (run, camcol, field)
    cache_dir : path-like
        Cache root (``frames/301/...`` below it).
    bands : iterable of str
    download : bool
        Fetch missing or corrupt files from ``base_url`` (``data.download`` in the config).
        When false, nothing touches the network and nothing in the cache is deleted.
    base_url : str
    verify_present : bool
        Check files already in the cache with :func:`check_frame`.
    **download_kwargs
        Passed to :func:`download_frames` (timeout, retries, backoff, session, workers, progress).

    Returns
    -------
    DownloadReport
        All files present (and, with ``download``, those fetched now).

    Raises
    ------
    FramesMissingError
        Listing every file still missing or unusable, why, and how to provide it.
    """
    fields = list(fields)
    base_url = resolve_base_url(base_url)
    if download:
        report = download_frames(
            fields,
            cache_dir,
            bands=bands,
            base_url=base_url,
            verify_present=verify_present,
            **download_kwargs,
        )
    else:
        report = DownloadReport()
        for key in requested_frames(fields, bands):
            dest = frame_cache_path(cache_dir, *key)
            url = frame_url(*key, base_url=base_url)
            if not dest.is_file():
                report.failed.append(
                    FrameFailure(dest, url, "not in the cache (download disabled)")
                )
                continue
            if verify_present:
                try:
                    check_frame(dest)
                except FrameIntegrityError as exc:
                    # The user's file: report it, never delete it without permission to refetch.
                    report.failed.append(FrameFailure(dest, url, f"present but unusable: {exc}"))
                    continue
            report.present.append(dest)
    if report.failed:
        raise FramesMissingError(
            missing_frames_message(report.failed, cache_dir, base_url=base_url, download=download),
            report.failed,
        )
    return report
