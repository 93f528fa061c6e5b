"""Download one frame over HTTP with retries, and land it in the cache only once it is checked.

The body is written to a temporary ``.partial`` file and renamed to its final path only after
its length and :func:`~stellarexp.data.frame_cache.check_frame` pass, so a crash or a truncated
response never leaves a half-written frame at the final path.

This module imports neither torch nor lightning.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import requests

from stellarexp.data.frame_cache import FrameIntegrityError, check_frame
from stellarexp.io_utils import atomic_path

log = logging.getLogger(__name__)

# Status codes worth retrying: the server or a proxy is busy or failed transiently.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CHUNK = 1 << 16
_MAX_RETRY_AFTER_S = 120.0


class ServerUnreachableError(Exception):
    """Every attempt to fetch a file failed to connect at all (no server, no network).

    The message is the reason of the last attempt; callers use it to stop trying other files.
    """


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        return None


def fetch_frame(
    url: str, dest: Path, session: requests.Session, *, timeout: float, retries: int, backoff: float
) -> tuple[str | None, int]:
    """Download ``url`` to ``dest`` with retries, keeping it only if it is a complete frame.

    Parameters
    ----------
    url : str
        Where the frame is served.
    dest : pathlib.Path
        Final cache path; written atomically, only after the checks pass.
    session : requests.Session
        Session used for every attempt.
    timeout : float
        Seconds to wait to connect and between received bytes (``requests`` semantics).
    retries : int
        Extra attempts after the first for transient failures (connection errors, timeouts,
        HTTP 408/425/429/5xx, truncated or corrupt bodies); other 4xx are not retried.
    backoff : float
        Wait before retry ``k`` (1-based) is ``backoff * 2**(k-1)`` seconds, or the server's
        ``Retry-After`` (capped at 120 s) when that is longer.

    Returns
    -------
    reason : str or None
        Why the file is still missing, or ``None`` when it was fetched.
    attempts : int
        Requests made.

    Raises
    ------
    ServerUnreachableError
        When no attempt reached the server.
    """
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
        raise ServerUnreachableError(reason)
    return f"{reason} (after {retries + 1} attempts)", retries + 1


def _short(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, which says what actually happened."""
    inner = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = str(inner) or type(inner).__name__
    return text if len(text) <= 300 else text[:297] + "..."
