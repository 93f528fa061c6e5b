"""Read SDSS "corrected frames" (``frame-{band}-{run}-{camcol}-{field}.fits.bz2``).

The same reader serves real DR17 frames and the synthetic survey's frames (written by
:mod:`stellarexp.survey.frame_writer` with the real HDU layout and header keywords).

Noise model (SDSS DR17 data model): ``dn = img / calib + sky``,
``dn_err = sqrt(dn / gain + darkVariance)``, ``img_err = dn_err * calib``.
"""

from __future__ import annotations

import bz2
import io
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from stellarexp import sdss

FRAME_NAME_RE = re.compile(r"frame-(?P<band>[ugriz])-(?P<run>\d{6})-(?P<camcol>[1-6])-(?P<field>\d{4})\.fits(\.bz2)?$")


class FrameError(RuntimeError):
    """A frame file is missing, truncated, corrupt or lacks what the pipeline needs."""


def parse_frame_name(path) -> tuple[str, int, int, int]:
    """Return ``(band, run, camcol, field)`` parsed from a frame file name.

    Raises
    ------
    FrameError
        If the name does not follow ``frame-{band}-{run:06d}-{camcol}-{field:04d}.fits[.bz2]``.
    """
    m = FRAME_NAME_RE.search(Path(path).name)
    if m is None:
        raise FrameError(
            f"{path}: not an SDSS frame name; expected frame-<band>-<run:06d>-<camcol>-<field:04d>.fits.bz2"
        )
    return m["band"], int(m["run"]), int(m["camcol"]), int(m["field"])


@dataclass
class Frame:
    """One band of one field, as read from a corrected frame.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``[1489, 2048]`` sky-subtracted image in nanomaggies.
    calib : numpy.ndarray
        float32 ``[2048]`` nanomaggies per count, applied along columns.
    allsky, xinterp, yinterp : numpy.ndarray
        The binned sky (counts) and the interpolation coordinates of HDU2.
    gain, dark_variance : float
        e-/DN and DN^2 for this band and camcol.
    """

    path: Path
    band: str
    run: int
    camcol: int
    field: int
    image: np.ndarray
    header: object
    wcs: object
    calib: np.ndarray
    allsky: np.ndarray
    xinterp: np.ndarray
    yinterp: np.ndarray
    gain: float
    dark_variance: float
    extras: dict = field(default_factory=dict)

    @cached_property
    def sky(self) -> np.ndarray:
        """Full-resolution sky in counts: bilinear interpolation of ALLSKY at (XINTERP, YINTERP)."""
        return sky_image(self.allsky, self.xinterp, self.yinterp)

    def counts(self) -> np.ndarray:
        """Image back in DN including the sky: ``img / calib + sky``."""
        return self.image / self.calib[None, :] + self.sky

    def sigma(self) -> np.ndarray:
        """Per-pixel 1-sigma noise in nanomaggies from gain and dark variance."""
        dn = np.clip(self.counts(), 0.0, None)
        return np.sqrt(dn / self.gain + self.dark_variance) * self.calib[None, :]

    def invvar(self) -> np.ndarray:
        """Inverse-variance map in nanomaggies^-2 (float32)."""
        return (1.0 / self.sigma() ** 2).astype(np.float32)


def _bilinear_index(coord: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower bin, upper bin and weight of the upper bin; coordinates outside [0, n-1] clamp
    to the edge bin (``scipy.ndimage.map_coordinates(order=1, mode="nearest")`` semantics)."""
    c = np.clip(np.asarray(coord, dtype=np.float64), 0.0, n - 1.0)
    i0 = np.minimum(np.floor(c).astype(np.intp), max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, c - i0


def sky_image(allsky: np.ndarray, xinterp: np.ndarray, yinterp: np.ndarray) -> np.ndarray:
    """Full-resolution sky (counts) from the binned ALLSKY of HDU2.

    ``sky[y, x]`` is the bilinear interpolation of ``allsky`` (rows = y bins) at
    ``(YINTERP[y], XINTERP[x])``. The interpolation is separable, so it is done as two 1-D
    passes (columns, then rows) instead of a 3-million-point 2-D lookup.

    Returns
    -------
    numpy.ndarray
        float32 ``[len(yinterp), len(xinterp)]``.
    """
    a = np.asarray(allsky, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"allsky must be a non-empty 2-D array, got shape {a.shape}")
    x0, x1, fx = _bilinear_index(xinterp, a.shape[1])
    y0, y1, fy = _bilinear_index(yinterp, a.shape[0])
    cols = (a[:, x0] * (1.0 - fx) + a[:, x1] * fx).astype(np.float32)
    wy0 = (1.0 - fy).astype(np.float32)[:, None]
    wy1 = fy.astype(np.float32)[:, None]
    out = cols[y0]
    out *= wy0
    out += cols[y1] * wy1
    return out


def _require(cond: bool, path, what: str) -> None:
    if not cond:
        raise FrameError(f"{path}: {what}; re-download the frame or rebuild the simulated survey")


def read_frame(path, *, gain: float | None = None, dark_variance: float | None = None) -> Frame:
    """Read a real or simulated SDSS corrected frame.

    Parameters
    ----------
    path : path-like
        ``frame-*.fits.bz2`` (or an uncompressed ``.fits``).
    gain, dark_variance : float, optional
        Override the per-camcol tables of :mod:`stellarexp.sdss` (e.g. from photoField).

    Returns
    -------
    Frame

    Raises
    ------
    FrameError
        Naming the file, if it is missing, truncated, corrupt, or lacks a celestial WCS,
        the calibration vector or the sky table.
    """
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: frame file not found; download it (stellarexp.data.download) or check frame_root")
    band, run, camcol, fieldnum = parse_frame_name(path)
    try:
        # lazy_load_hdus=False + touching .data forces full decompression inside the try,
        # so a truncated bz2 stream surfaces here and not later in the pipeline.
        raw = path.read_bytes()
        if path.name.endswith(".bz2"):
            # one-shot decompression is ~2x faster than astropy's streaming bz2 reader
            raw = bz2.decompress(raw)
        # FITS files come in 2880-byte records: anything else was cut short
        _require(len(raw) > 0 and len(raw) % 2880 == 0, path,
                 f"is {len(raw)} bytes, not a whole number of 2880-byte FITS records (truncated)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hdul = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False)
        with hdul:
            _require(not any("truncated" in str(w.message) for w in caught), path, "is truncated")
            _require(len(hdul) >= 3, path, f"has {len(hdul)} HDUs, an SDSS frame has 4 (image, calib, sky, astrometry)")
            header = hdul[0].header.copy()
            image = hdul[0].data
            _require(image is not None and image.ndim == 2, path, "HDU0 holds no 2-D image")
            image = np.asarray(image, dtype=np.float32)
            calib = np.asarray(hdul[1].data, dtype=np.float32)
            sky = hdul[2].data
            _require(sky is not None and {"ALLSKY", "XINTERP", "YINTERP"} <= set(sky.names), path,
                     "HDU2 lacks the ALLSKY/XINTERP/YINTERP sky table")
            allsky = np.asarray(sky["ALLSKY"][0], dtype=np.float32)
            xinterp = np.asarray(sky["XINTERP"][0], dtype=np.float32)
            yinterp = np.asarray(sky["YINTERP"][0], dtype=np.float32)
    except FrameError:
        raise
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, MemoryError) as exc:
        raise FrameError(f"{path}: cannot read frame ({type(exc).__name__}: {exc}); the file is truncated or corrupt, "
                         "delete and re-download it") from exc
    ny, nx = image.shape
    _require(calib.shape == (nx,), path, f"calibration vector has shape {calib.shape}, expected ({nx},)")
    _require(xinterp.shape == (nx,) and yinterp.shape == (ny,), path, "sky interpolation vectors do not match the image")
    if str(header.get("CTYPE1", "")).strip() == "" or str(header.get("CTYPE2", "")).strip() == "":
        raise FrameError(f"{path}: HDU0 has no WCS (CTYPE1/CTYPE2 missing); the pipeline needs each band's WCS to align it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)  # RADECSYS spelling, as SDSS writes it
            wcs = WCS(header)
            # the WCS must also transform: a frame whose projection astropy cannot apply is
            # rejected here, with its file name, not later in the middle of a build
            centre = wcs.all_pix2world([[nx / 2.0, ny / 2.0]], 0)
            back = wcs.all_world2pix(centre, 0)
    except Exception as exc:  # astropy.wcs raises many types (e.g. InconsistentAxisTypesError)
        raise FrameError(f"{path}: HDU0 WCS cannot be used ({type(exc).__name__}: {exc}; CTYPE1="
                         f"{header.get('CTYPE1')!r}); re-download the frame") from exc
    _require(wcs.has_celestial, path, "HDU0 WCS is not celestial")
    _require(bool(np.isfinite(centre).all() and np.isfinite(back).all()), path,
             "HDU0 WCS gives no finite sky position at the frame centre")
    hdr_band = str(header.get("FILTER", band)).strip()
    _require(hdr_band == band, path, f"FILTER keyword {hdr_band!r} disagrees with the file name band {band!r}")
    hdr_camcol = int(header.get("CAMCOL", camcol))
    _require(hdr_camcol == camcol, path, f"CAMCOL keyword {hdr_camcol} disagrees with the file name camcol {camcol}")
    hdr_run = int(header.get("RUN", run))
    _require(hdr_run == run, path, f"RUN keyword {hdr_run} disagrees with the file name run {run}")
    return Frame(
        path=path, band=band, run=run, camcol=camcol, field=fieldnum, image=image, header=header, wcs=wcs,
        calib=calib, allsky=allsky, xinterp=xinterp, yinterp=yinterp,
        gain=float(gain if gain is not None else sdss.gain(band, camcol)),
        dark_variance=float(dark_variance if dark_variance is not None else sdss.dark_variance(band, camcol)),
    )


def read_field(frame_root, run: int, camcol: int, field: int, bands=sdss.BANDS) -> dict[str, Frame]:
    """Read the frames of one field from a SAS-layout root (``frames/301/{run}/{camcol}/``).

    Raises
    ------
    FrameError
        For the first band that is missing or unreadable.
    """
    root = Path(frame_root)
    return {b: read_frame(root / sdss.frame_relpath(b, run, camcol, field)) for b in bands}
