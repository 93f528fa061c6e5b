"""Where an SDSS frame lives (SAS URL, cache path) and whether a cached file is a usable frame.

A frame is addressed by ``(band, run, camcol, field)``. Its URL is
``{base_url}/frames/301/{run}/{camcol}/frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2``
and its cached copy lives at the same relative path under the cache directory, so a cache can
be filled by :mod:`stellarexp.data.download`, by ``wget -r``/``rsync`` from a mirror, or by hand.

Every file that lands in the cache has passed :func:`check_frame` (the bz2 stream is complete
and astropy reads a 2-D image from HDU0).

This module imports neither torch nor lightning, nor does it touch the network.
"""

from __future__ import annotations

import bz2
import io
from collections.abc import Iterable
from pathlib import Path

from astropy.io import fits

from stellarexp.sdss import BANDS, SAS_BASE_URL, frame_path, frame_relpath

DEFAULT_BASE_URL = SAS_BASE_URL
"""Default root of the ``frames/301/...`` tree: the DR17 SAS (``data.base_url`` overrides it)."""


class FrameIntegrityError(ValueError):
    """A frame file is truncated, not bz2, or not a FITS file with a 2-D image in HDU0."""


def resolve_base_url(base_url: str | None) -> str:
    """Validated base URL of a SAS-like tree, without a trailing slash.

    Parameters
    ----------
    base_url : str or None
        Root holding ``frames/301/...``; ``None`` or empty means :data:`DEFAULT_BASE_URL`.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If ``base_url`` is not an http:// or https:// URL.
    """
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
    return f"{resolve_base_url(base_url)}/{frame_relpath(band, run, camcol, field)}"


def frame_cache_path(cache_dir, band: str, run: int, camcol: int, field: int) -> Path:
    """Path of a frame in a cache laid out like the SAS (``<cache>/frames/301/{run}/{camcol}/...``),
    or directly in ``cache_dir`` when it is there and not in the SAS layout
    (:func:`stellarexp.sdss.frame_path`; downloads go to the SAS layout).

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
    return frame_path(cache_dir, band, run, camcol, field)


def requested_frames(
    fields: Iterable[tuple[int, int, int]], bands: Iterable[str]
) -> list[tuple[str, int, int, int]]:
    """Expand (run, camcol, field) triples into unique (band, run, camcol, field) keys, in order.

    Parameters
    ----------
    fields : iterable of (run, camcol, field)
        SDSS fields; duplicates are kept once.
    bands : iterable of str
        Bands wanted for every field, each one of ``u g r i z``.

    Returns
    -------
    list of (band, run, camcol, field)
        Field-major, in the order given.

    Raises
    ------
    ValueError
        If a band is not an SDSS band.
    """
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
