"""SDSS facts shared by the synthetic survey (:mod:`stellarexp.survey`) and the real-data
pipeline (:mod:`stellarexp.data`): bands, camera constants, naming rules, flag bits, units.

Values are those of SDSS DR17 documentation (see ``docs/frames.md``). The frame reader is
:mod:`stellarexp.sdss.frames`, the calibObj star-catalogue reader :mod:`stellarexp.sdss.calibobj`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stellarexp.constants import BANDS

"""Band order used everywhere (arrays of shape [..., 5, ...] follow it)."""

REFERENCE_BAND = "r"
"""Band whose pixel grid the cutouts are aligned to."""

NAXIS1, NAXIS2 = 2048, 1489
"""Corrected-frame size: NAXIS1 columns (x) by NAXIS2 rows (y)."""

PIXEL_SCALE_ARCSEC = 0.396
EXPTIME_S = 53.907456
RERUN = "301"
SOFTBIAS = 1000

DRIFT_ORDER: tuple[str, ...] = ("r", "i", "u", "z", "g")
DRIFT_DELAY_S = 71.72

# Gain (e-/DN) and dark variance (DN^2) per band, camcol 1..6.
GAIN: dict[str, tuple[float, ...]] = {
    "u": (1.62, 1.595, 1.59, 1.6, 1.47, 2.17),
    "g": (3.32, 3.855, 3.845, 3.995, 4.05, 4.035),
    "r": (4.71, 4.6, 4.72, 4.76, 4.725, 4.895),
    "i": (5.165, 6.565, 4.86, 4.885, 4.64, 4.76),
    "z": (4.745, 5.155, 4.885, 4.775, 3.48, 4.69),
}
DARK_VARIANCE: dict[str, tuple[float, ...]] = {
    "u": (9.61, 12.6, 8.70, 12.6, 9.30, 7.02),
    "g": (15.6, 1.44, 1.32, 1.96, 1.10, 1.82),
    "r": (1.82, 1.00, 1.32, 1.32, 0.81, 0.90),
    "i": (7.84, 5.76, 4.62, 6.25, 7.84, 5.06),
    "z": (0.81, 1.0, 1.0, 9.61, 1.82, 1.21),
}

# Asinh magnitude softening b per band (dimensionless, Lupton et al. 1999).
ASINH_SOFTENING: dict[str, float] = {"u": 1.4e-10, "g": 0.9e-10, "r": 1.2e-10, "i": 1.8e-10, "z": 7.4e-10}

# Extinction A_x / E(B-V), Schlafly & Finkbeiner 2011 (R_V = 3.1).
EXTINCTION_COEFF: dict[str, float] = {"u": 4.239, "g": 3.303, "r": 2.285, "i": 1.698, "z": 1.263}

# Median sky, nanomaggies per arcsec^2.
SKY_NMGY_PER_ARCSEC2: dict[str, float] = {"u": 1.5, "g": 1.7, "r": 4.2, "i": 8.1, "z": 24.9}

# Typical NMGY (nanomaggies per count) per band: midpoints of the real range.
NMGY_TYPICAL: dict[str, float] = {"u": 0.011, "g": 0.0040, "r": 0.0052, "i": 0.0063, "z": 0.036}

SATURATION_DN = 65535.0

# photoObj flag bits used by the paper's Appendix-D query.
FLAG_SATURATED = 1 << 18  # 262144
FLAG_INTERP = 1 << 17  # 131072
FLAG_DEBLEND_TOO_MANY_PEAKS = 1 << 11  # 2048
PAPER_CUT_FLAGS = FLAG_SATURATED | FLAG_INTERP | FLAG_DEBLEND_TOO_MANY_PEAKS

# APOGEE/ASPCAP sentinel for a missing label.
LABEL_SENTINEL = -9999.0

SAS_BASE_URL = "https://data.sdss.org/sas/dr17/eboss/photoObj"


def camcol_index(camcol: int) -> int:
    """Return the 0-based index of ``camcol`` (1..6), raising ``ValueError`` otherwise."""
    if not 1 <= int(camcol) <= 6:
        raise ValueError(f"camcol must be 1..6, got {camcol!r}")
    return int(camcol) - 1


def gain(band: str, camcol: int) -> float:
    """Return the gain (e-/DN) of ``band`` on ``camcol``."""
    return GAIN[band][camcol_index(camcol)]


def dark_variance(band: str, camcol: int) -> float:
    """Return the dark variance (DN^2) of ``band`` on ``camcol``."""
    return DARK_VARIANCE[band][camcol_index(camcol)]


def frame_filename(band: str, run: int, camcol: int, field: int) -> str:
    """Return the SDSS corrected-frame file name, e.g. ``frame-r-004510-4-0030.fits.bz2``."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    return f"frame-{band}-{int(run):06d}-{int(camcol)}-{int(field):04d}.fits.bz2"


def frame_relpath(band: str, run: int, camcol: int, field: int) -> str:
    """Return the SAS-layout relative path ``frames/301/{run}/{camcol}/<name>``."""
    return f"frames/{RERUN}/{int(run)}/{int(camcol)}/{frame_filename(band, run, camcol, field)}"


def frame_path(root, band: str, run: int, camcol: int, field: int) -> Path:
    """A frame under ``root``: in the SAS layout (:func:`frame_relpath`), else directly in
    ``root`` (a folder of one field's frames as downloaded); the SAS path when neither exists."""
    sas = Path(root) / frame_relpath(band, run, camcol, field)
    flat = Path(root) / frame_filename(band, run, camcol, field)
    return flat if not sas.is_file() and flat.is_file() else sas


def nmgy_to_mag(flux_nmgy):
    """Pogson magnitude of a flux in nanomaggies: ``22.5 - 2.5 log10(f)`` (NaN for f <= 0)."""
    flux = np.asarray(flux_nmgy, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, 22.5 - 2.5 * np.log10(flux), np.nan)


def nmgy_ivar_to_mag_err(flux_nmgy, ivar):
    """Pogson magnitude error of a flux and its inverse variance (NaN where either is <= 0)."""
    f = np.asarray(flux_nmgy, dtype=float)
    iv = np.asarray(ivar, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((f > 0) & (iv > 0), 2.5 / np.log(10.0) / (f * np.sqrt(iv)), np.nan)


def mag_to_nmgy(mag):
    """Flux in nanomaggies of a Pogson magnitude."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - 22.5))


def asinh_mag(flux_nmgy, band: str):
    """SDSS asinh magnitude (Lupton et al. 1999) of a flux in nanomaggies."""
    b = ASINH_SOFTENING[band]
    f = np.asarray(flux_nmgy, dtype=float) * 1e-9  # in units of the AB zero point (maggies)
    return -2.5 / np.log(10.0) * (np.arcsinh(f / (2.0 * b)) + np.log(b))


def asinh_mag_err(flux_nmgy, flux_err_nmgy, band: str):
    """Error of :func:`asinh_mag` propagated from a flux error (both in nanomaggies)."""
    b = ASINH_SOFTENING[band]
    f = np.asarray(flux_nmgy, dtype=float) * 1e-9
    df = np.asarray(flux_err_nmgy, dtype=float) * 1e-9
    return 2.5 / np.log(10.0) * df / (2.0 * b) / np.sqrt(1.0 + (f / (2.0 * b)) ** 2)


def obj_id(run, camcol, field, ident, rerun: int = int(RERUN), sky_version: int = 2) -> np.ndarray:
    """photoObj objID from its parts (bit layout: skyVersion, rerun, run, camcol, firstField 0,
    field, id; skyVersion 2 is DR8 and later).

    Parameters
    ----------
    run, camcol, field, ident : array_like of int

    Returns
    -------
    numpy.ndarray of int64
    """
    run, camcol, field, ident = (np.asarray(a, dtype=np.int64) for a in (run, camcol, field, ident))
    return ((np.int64(sky_version) << 59) | (np.int64(rerun) << 48) | (run << 32) | (camcol << 29)
            | (field << 16) | ident)
