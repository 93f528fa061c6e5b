"""Fetch SDSS corrected frames into a local cache laid out like the SAS.

A frame is addressed by ``(band, run, camcol, field)``. Its URL is
``{base_url}/frames/301/{run}/{camcol}/frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2``
and its cached copy lives at the same relative path under the cache directory, so a cache can
be filled by this module, by ``wget -r``/``rsync`` from a mirror, or by hand.

Every file that lands in the cache has passed :func:`check_frame` (the bz2 stream is complete
and astropy reads a 2-D image from HDU0); a download is written to a temporary ``.partial``
file and renamed only after that check, so a crash or a truncated response never leaves a
half-written frame at the final path.

This module imports neither torch nor lightning; it is cheap to import.
"""

from __future__ import annotations

import bz2
import io
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import requests

from stellarexp.io_utils import atomic_path
from stellarexp.sdss import BANDS, SAS_BASE_URL, frame_relpath

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = SAS_BASE_URL
"""Default root of the ``frames/301/...`` tree: the DR17 SAS (``data.base_url`` overrides it)."""

# Status codes worth retrying: the server or a proxy is busy or failed transiently.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CHUNK = 1 << 16
_MAX_RETRY_AFTER_S = 120.0


class FrameIntegrityError(ValueError):
    """A frame file is truncated, not bz2, or not a FITS file with a 2-D image in HDU0."""


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


def _base_url(base_url: str | None) -> str:
    """Validated base URL; ``None`` or empty means the DR17 SAS."""
    if not base_url:
        return DEFAULT_BASE_URL
    base_url = str(base_url)
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base URL must start with http:// or https://, got {base_url!r}")
    return base_url.rstrip("/")


def frame_url(
    band: str, run: int, camcol: int, field: int, base_url: str | None = SAS_BASE_URL
) -> str:
    """URL of a frame under ``base_url`` (SAS layout).

    Parameters
    ----------
    band : str
        One of ``u g r i z``.
    run, camcol, field : int
        SDSS field address.
    base_url : str, optional
        Root holding ``frames/301/...``; default (or ``None``): the DR17 SAS ``eboss/photoObj``
        directory.

    Returns
    -------
    str
    """
    return f"{_base_url(base_url)}/{frame_relpath(band, run, camcol, field)}"


def frame_cache_path(cache_dir, band: str, run: int, camcol: int, field: int) -> Path:
    """Path of a frame in a cache laid out like the SAS (``<cache>/frames/301/{run}/{camcol}/...``).

    Parameters
    ----------
    cache_dir : path-like
        Cache root (the ``frame_root`` of a data config).
    band : str
    run, camcol, field : int

    Returns
    -------
    pathlib.Path
    """
    return Path(cache_dir) / frame_relpath(band, run, camcol, field)


def check_frame(path, *, label: str | None = None) -> tuple[int, ...]:
    """Check that ``path`` is a complete bz2-compressed FITS frame with a 2-D image in HDU0.

    The whole bz2 stream is decompressed (a truncated stream raises), then astropy parses the
    primary header and the image; the image bytes must lie inside the decompressed file.

    Parameters
    ----------
    path : path-like
        A ``frame-*.fits.bz2`` file.
    label : str, optional
        Name used in error messages (default: the file name).

    Returns
    -------
    tuple of int
        Shape of the HDU0 image (rows, columns).

    Raises
    ------
    FrameIntegrityError
        If any of the above fails; the message says what.
    """
    from astropy.io import fits

    path = Path(path)
    name = label or path.name
    try:
        with bz2.open(path, "rb") as fh:
            raw = fh.read()
    except EOFError as exc:
        raise FrameIntegrityError(f"{name}: bz2 stream is truncated ({exc})") from exc
    except OSError as exc:
        raise FrameIntegrityError(f"{name}: not a valid bz2 file ({exc})") from exc
    if not raw:
        raise FrameIntegrityError(f"{name}: bz2 stream decompresses to nothing")
    try:
        with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=True) as hdul:
            hdu = hdul[0]
            if not hdu.is_image:
                raise FrameIntegrityError(f"{name}: HDU0 is not an image")
            naxis = int(hdu.header.get("NAXIS", 0))
            shape = tuple(int(hdu.header.get(f"NAXIS{k}", 0)) for k in range(naxis, 0, -1))
            if naxis != 2 or min(shape) <= 0:
                raise FrameIntegrityError(f"{name}: HDU0 image has shape {shape}, expected 2 dims")
            # The decompressed file must hold the whole data block, not just the header.
            nbytes = abs(int(hdu.header["BITPIX"])) // 8 * shape[0] * shape[1]
            data_start = hdul.fileinfo(0)["datLoc"]
            if data_start + nbytes > len(raw):
                raise FrameIntegrityError(
                    f"{name}: FITS data block is cut short "
                    f"({len(raw) - data_start} of {nbytes} bytes)"
                )
    except FrameIntegrityError:
        raise
    except Exception as exc:  # astropy raises OSError, ValueError, KeyError ... on garbage
        raise FrameIntegrityError(f"{name}: not a readable FITS file ({exc})") from exc
    return shape


def _requested(fields, bands) -> list[tuple[str, int, int, int]]:
    """Expand (run, camcol, field) triples into unique (band, run, camcol, field) keys, in order."""
    bands = tuple(bands)
    for b in bands:
        if b not in BANDS:
            raise ValueError(f"band must be one of {BANDS}, got {b!r}")
    keys: dict[tuple[str, int, int, int], None] = {}
    for item in fields:
        run, camcol, fld = (int(v) for v in item)
        for b in bands:
            keys[(b, run, camcol, fld)] = None
    return list(keys)


class _Unreachable(Exception):
    """Internal: every attempt failed to connect at all."""


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        return None


def _fetch(
    url: str, dest: Path, session: requests.Session, *, timeout: float, retries: int, backoff: float
) -> tuple[str | None, int]:
    """Download ``url`` to ``dest`` with retries; return (failure reason or None, attempts)."""
    reason = "not attempted"
    wait = 0.0
    only_connect_errors = True
    for attempt in range(retries + 1):
        if attempt:
            # Exponential backoff; a server's Retry-After wins when it asks for longer.
            time.sleep(max(wait, backoff * 2 ** (attempt - 1)))
        wait = 0.0
        responded = False
        try:
            with session.get(url, stream=True, timeout=timeout) as resp:
                responded = True
                code = resp.status_code
                if code != 200:
                    reason = f"HTTP {code} {resp.reason or ''}".strip()
                    only_connect_errors = False
                    if code in RETRY_STATUS or code >= 500:
                        wait = _retry_after(resp) or 0.0
                        continue
                    # 404 and other client errors will not change on retry.
                    return f"{reason} ({url})", attempt + 1
                expected = resp.headers.get("Content-Length")
                encoded = resp.headers.get("Content-Encoding", "identity") not in ("", "identity")
                with atomic_path(dest) as tmp:
                    written = 0
                    with open(tmp, "wb") as out:
                        for chunk in resp.iter_content(_CHUNK):
                            out.write(chunk)
                            written += len(chunk)
                    if expected is not None and not encoded and written != int(expected):
                        raise FrameIntegrityError(
                            f"response ended after {written} of {expected} bytes"
                        )
                    check_frame(tmp, label=dest.name)
                return None, attempt + 1
        except FrameIntegrityError as exc:
            only_connect_errors = False
            reason = f"corrupt download: {exc}"
        except requests.exceptions.ConnectionError as exc:
            # Connect timeouts, refused connections, DNS failures; or a stream dropped mid-body,
            # which proves the server is reachable.
            only_connect_errors = only_connect_errors and not responded
            reason = f"connection failed: {_short(exc)}"
        except requests.exceptions.Timeout as exc:
            only_connect_errors = False
            reason = f"timed out after {timeout:g} s: {_short(exc)}"
        except requests.exceptions.RequestException as exc:
            # e.g. ChunkedEncodingError when the body is shorter than Content-Length.
            only_connect_errors = False
            reason = f"incomplete response: {_short(exc)}"
        log.debug("attempt %d of %s failed: %s", attempt + 1, url, reason)
    if only_connect_errors:
        raise _Unreachable(reason)
    return f"{reason} (after {retries + 1} attempts)", retries + 1


def _short(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, which says what actually happened."""
    inner = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = str(inner) or type(inner).__name__
    return text if len(text) <= 300 else text[:297] + "..."


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
        Root of a SAS-like tree, http(s) (default or ``None``: :data:`DEFAULT_BASE_URL`, DR17).
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
    from tqdm.auto import tqdm

    base_url = _base_url(base_url)
    keys = _requested(fields, bands)
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
            reason, attempts = _fetch(
                url, dest, get_session(), timeout=timeout, retries=retries, backoff=backoff
            )
        except _Unreachable as exc:
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
    base_url = _base_url(base_url)
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
        for key in _requested(fields, bands):
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
