"""Per-field, per-band observing conditions of the synthetic SDSS survey.

:func:`draw_field_conditions` draws, for one run/camcol/field, everything the renderer needs
for each band: the PSF (FWHM and shape), the sky, the camera's gain and dark variance, the
photometric calibration (a ``[2048]`` nanomaggies-per-count vector with a slight flat-field
ripple), the band's TAN WCS, the epoch, the cosmic-ray rate and the CCD's bad columns.
The distributions follow SDSS (``../shared/SIMULATOR.md``); the choices are documented in
``docs/frames.md``. All randomness comes from the ``rng`` passed in, so a seed fixes a field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from stellarexp import sdss
from stellarexp.survey.psf import PSFParams

PIXEL_AREA_ARCSEC2 = sdss.PIXEL_SCALE_ARCSEC**2
PIXEL_SCALE_DEG = sdss.PIXEL_SCALE_ARCSEC / 3600.0

# Effective wavelengths (Angstrom) of the SDSS filters, for the lambda^-0.3 seeing law.
WAVELENGTH_A: dict[str, float] = {"u": 3551.0, "g": 4686.0, "r": 6166.0, "i": 7480.0, "z": 8932.0}
# Extra broadening on top of the law: u suffers most from the atmosphere and optics, and z from
# the red halo of thick CCDs (SDSS's z PSF is broader than lambda^-0.3 predicts).
FWHM_EXTRA: dict[str, float] = {"u": 1.04, "g": 1.0, "r": 1.0, "i": 1.0, "z": 1.07}
# r-band FWHM (arcsec) = offset + scale * lognormal(0, sigma): median 1.3", sd ~0.22",
# P(FWHM > 2") = 1% (the tail SIMULATOR.md quotes), never better than ~0.7".
SEEING_OFFSET, SEEING_SCALE, SEEING_SIGMA = 0.6, 0.7, 0.2975
SEEING_LIMITS = (0.7, 3.5)
# The bands are exposed 71.7 s apart (drift scan), so seeing decorrelates a little between them.
SEEING_BAND_JITTER = 0.03

# Sky: log-normal around the SDSS medians (sdss.SKY_NMGY_PER_ARCSEC2), a common factor per field
# (moon, twilight, airmass) plus a band-specific part.
SKY_COMMON_SIGMA = 0.15
SKY_BAND_SIGMA: dict[str, float] = {"u": 0.25, "g": 0.25, "r": 0.2, "i": 0.2, "z": 0.2}
# Truncation (nanomaggies / arcsec^2). The lower limits keep a frame's sky noise inside the
# envelope of the measured real frames for every camcol's gain/darkVariance and every NMGY of
# NMGY_RANGE (see docs/frames.md); real skies do go lower in i and z on dark nights.
SKY_LIMITS: dict[str, tuple[float, float]] = {
    "u": (0.85, 4.0), "g": (1.2, 6.0), "r": (2.3, 14.0), "i": (5.2, 25.0), "z": (19.5, 60.0),
}
# Nanomaggies per count: the range of the real frames' NMGY (../shared/data/README.md).
NMGY_RANGE: dict[str, tuple[float, float]] = {
    "u": (0.010, 0.012), "g": (0.0036, 0.0045), "r": (0.0049, 0.0055), "i": (0.0060, 0.0066), "z": (0.033, 0.039),
}
# Cosmic-ray hits per frame and band (same exposure and CCD type in every band).
COSMIC_RAY_RATE_RANGE = (25.0, 75.0)
# Per-band astrometric differences relative to r (drift scan: each band has its own solution).
BAND_OFFSET_SD_PX, BAND_OFFSET_MAX_PX = 3.0, 10.0
BAND_ROTATION_SD_RAD = 1.5e-4
BAND_SCALE_SD = 2e-4
SCAN_ANGLE_RANGE_DEG = (-35.0, 35.0)
MJD_RANGE = (51075.0, 54800.0)  # SDSS imaging, 1998-2008
BIN = 8  # ALLSKY bin size in pixels, as in the real frames


def _check(name: str, value, *, positive: bool = True, allow_zero: bool = False) -> float:
    """Return ``value`` as float, raising ``ValueError`` naming ``name`` when impossible."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and (v < 0 or (v == 0 and not allow_zero)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value!r}")
    return v


@dataclass(frozen=True, eq=False)
class BandConditions:
    """Observing conditions of one band of one field.

    Attributes
    ----------
    band : str
    fwhm_arcsec : float
        PSF full width at half maximum.
    psf : PSFParams
        The PSF in pixels (its ``fwhm_px`` is ``fwhm_arcsec / 0.396``).
    sky_nmgy_arcsec2 : float
        Mean sky surface brightness.
    sky_gradient : tuple of float
        Relative sky change across the frame in x and y (the ALLSKY map is a gentle plane).
    gain, dark_variance : float
        e-/DN and DN^2 of this camcol and band.
    calib : numpy.ndarray
        ``[nx]`` nanomaggies per count along the columns.
    wcs_header : dict
        CTYPE/CUNIT, CRPIX1/2, CRVAL1/2 and CD1_1..CD2_2 of the band's TAN WCS.
    tai : float
        TAI (seconds since 1858-11-17) of the frame's first row in this band.
    airmass : float
    cosmic_ray_rate : float
        Expected number of cosmic-ray hits on the frame.
    bad_columns : tuple of (int, int)
        ``(column, first_row)``: the column is bad from ``first_row`` to the top.
    """

    band: str
    fwhm_arcsec: float
    psf: PSFParams
    sky_nmgy_arcsec2: float
    sky_gradient: tuple[float, float]
    gain: float
    dark_variance: float
    calib: np.ndarray
    wcs_header: Mapping[str, object]
    tai: float
    airmass: float
    cosmic_ray_rate: float
    bad_columns: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        if self.band not in sdss.BANDS:
            raise ValueError(f"band must be one of {sdss.BANDS}, got {self.band!r}")
        b = self.band
        _check(f"{b}.fwhm_arcsec (seeing)", self.fwhm_arcsec)
        _check(f"{b}.sky_nmgy_arcsec2", self.sky_nmgy_arcsec2)
        _check(f"{b}.gain", self.gain)
        _check(f"{b}.dark_variance", self.dark_variance, allow_zero=True)
        _check(f"{b}.airmass", self.airmass)
        _check(f"{b}.cosmic_ray_rate", self.cosmic_ray_rate, allow_zero=True)
        _check(f"{b}.tai", self.tai, positive=False)
        for g in self.sky_gradient:
            _check(f"{b}.sky_gradient", g, positive=False)
        calib = np.asarray(self.calib)
        if calib.ndim != 1 or calib.size == 0:
            raise ValueError(f"{b}.calib must be a non-empty 1-D vector, got shape {calib.shape}")
        if not (np.all(np.isfinite(calib)) and np.all(calib > 0)):
            raise ValueError(f"{b}.calib must be finite and positive (nanomaggies per count)")
        for key in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2"):
            if key not in self.wcs_header:
                raise ValueError(f"{b}.wcs_header lacks {key}")
            _check(f"{b}.wcs_header[{key}]", self.wcs_header[key], positive=False)

    @property
    def nmgy(self) -> float:
        """Mean nanomaggies per count (the header's NMGY)."""
        return float(np.mean(self.calib))

    @property
    def sky_counts(self) -> float:
        """Mean sky per pixel in DN."""
        return self.sky_nmgy_arcsec2 * PIXEL_AREA_ARCSEC2 / self.nmgy

    @property
    def noise_sigma(self) -> float:
        """Predicted sky-limited pixel noise in nanomaggies: ``sqrt(sky/gain + darkVariance) * NMGY``."""
        return math.sqrt(self.sky_counts / self.gain + self.dark_variance) * self.nmgy


@dataclass(frozen=True, eq=False)
class FieldConditions:
    """Conditions of one field: identifiers, pointing, frame shape and the five bands."""

    run: int
    camcol: int
    field: int
    ra0: float
    dec0: float
    scan_angle_deg: float
    mjd: float
    shape: tuple[int, int]
    bands: dict[str, BandConditions] = field(default_factory=dict)

    def __post_init__(self):
        validate_identifiers(self.run, self.camcol, self.field)
        validate_shape(self.shape)
        missing = [b for b in sdss.BANDS if b not in self.bands]
        if missing:
            raise ValueError(f"bands lacks {missing}; a field needs all of {sdss.BANDS}")
        for b, bc in self.bands.items():
            if bc.calib.shape != (self.shape[1],):
                raise ValueError(f"{b}.calib has shape {bc.calib.shape}, expected ({self.shape[1]},) for shape {self.shape}")


def validate_identifiers(run, camcol, field) -> None:
    """Raise ``ValueError`` naming ``run``/``camcol``/``field`` when outside SDSS's ranges."""
    if not (isinstance(run, (int, np.integer)) and 0 < int(run) <= 999999):
        raise ValueError(f"run must be an integer in 1..999999, got {run!r}")
    if not (isinstance(camcol, (int, np.integer)) and 1 <= int(camcol) <= 6):
        raise ValueError(f"camcol must be an integer in 1..6, got {camcol!r}")
    if not (isinstance(field, (int, np.integer)) and 0 <= int(field) <= 9999):
        raise ValueError(f"field must be an integer in 0..9999, got {field!r}")


def validate_shape(shape) -> tuple[int, int]:
    """Return ``(ny, nx)``, raising ``ValueError`` naming ``shape`` for empty or odd input."""
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (ny, nx), got {shape!r}") from None
    if ny <= 0 or nx <= 0 or (ny, nx) != tuple(shape):
        raise ValueError(f"shape must be two positive integers (ny, nx), got {shape!r}")
    return ny, nx


def tan_wcs_header(ra0: float, dec0: float, scan_angle_deg: float, shape, *, scale_deg: float = PIXEL_SCALE_DEG,
                   rotation_rad: float = 0.0) -> dict:
    """SDSS-like TAN WCS of a frame centred on ``(ra0, dec0)``.

    SDSS frames have their rows along the scan (y ~ RA on the equator) and columns across it,
    a mirror-image (negative determinant) near-90-degree CD matrix:
    ``CD = s [[sin a, cos a], [cos a, -sin a]]`` with ``a`` the angle between the scan's great
    circle and the local parallel (0 on the celestial equator).
    """
    ny, nx = validate_shape(shape)
    a = math.radians(scan_angle_deg) + rotation_rad
    s = scale_deg
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
        # 1-based reference pixel at the frame centre, as in the real frames (1025, 745)
        "CRPIX1": nx / 2 + 1.0, "CRPIX2": ny / 2 + 0.5,
        "CRVAL1": float(ra0) % 360.0, "CRVAL2": float(dec0),
        "CD1_1": s * math.sin(a), "CD1_2": s * math.cos(a),
        "CD2_1": s * math.cos(a), "CD2_2": -s * math.sin(a),
    }


def _truncated_normal(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Standard normal deviate restricted to [lo, hi] (rejection; fixed draw order for a seed)."""
    for _ in range(1000):
        v = float(rng.standard_normal())
        if lo <= v <= hi:
            return v
    return float(np.clip(0.0, lo, hi))


def _calib_vector(rng: np.random.Generator, nmgy: float, nx: int) -> np.ndarray:
    """Nanomaggies per count along the columns: a slow flat-field ripple and a rise at the first
    columns (as in the real frames, ~0.3% ripple, 0.5-2% at the edge), mean ``nmgy``."""
    x = np.arange(nx, dtype=float)
    ripple = rng.uniform(0.001, 0.003) * np.sin(2 * np.pi * x / rng.uniform(300.0, 900.0) + rng.uniform(0, 2 * np.pi))
    tilt = rng.normal(0.0, 0.002) * (x / max(nx - 1, 1) - 0.5)
    edge = rng.uniform(0.0, 0.015) * np.exp(-x / 40.0)
    shape = 1.0 + ripple + tilt + edge
    return (nmgy * shape / shape.mean()).astype(np.float32)


def _bad_columns(camcol: int, band: str, nx: int, ny: int) -> tuple[tuple[int, int], ...]:
    """CCD defects are fixed per chip: a deterministic 0-3 bad columns per (camcol, band)."""
    rng = np.random.default_rng([int(camcol), sdss.BANDS.index(band), 20_04])
    n = int(rng.choice([0, 1, 1, 2, 3]))
    cols = rng.choice(np.arange(4, max(nx - 4, 5)), size=min(n, max(nx - 8, 0)), replace=False)
    out = []
    for c in sorted(int(c) for c in cols):
        first = 0 if rng.uniform() < 0.5 else int(rng.integers(0, ny))
        out.append((c, first))
    return tuple(out)


def _tai_from_mjd(mjd: float) -> float:
    return float(mjd) * 86400.0


def draw_field_conditions(run: int, camcol: int, field: int, rng: np.random.Generator, *, ra0: float, dec0: float,
                          scan_angle_deg: float | None = None, fwhm_r_arcsec: float | None = None,
                          shape=(sdss.NAXIS2, sdss.NAXIS1)) -> FieldConditions:
    """Draw the observing conditions of one field.

    Parameters
    ----------
    run, camcol, field : int
        SDSS identifiers (camcol 1..6 selects gain and dark variance).
    rng : numpy.random.Generator
        Source of all randomness (the same generator state gives the same conditions).
    ra0, dec0 : float
        Centre of the r-band frame (degrees); the r band defines the field.
    scan_angle_deg : float, optional
        Angle between the scan direction and the local parallel (0 on the equator); drawn
        uniformly in [-35, 35] degrees when omitted.
    fwhm_r_arcsec : float, optional
        Fix the r-band seeing instead of drawing it (other bands follow the seeing law).
    shape : tuple of int
        ``(ny, nx)`` of the frames; SDSS's 1489 x 2048 by default (smaller for fast tests).

    Returns
    -------
    FieldConditions

    Raises
    ------
    ValueError
        Naming the setting, for impossible values (negative seeing, zero size, NaN, camcol 7...).
    """
    validate_identifiers(run, camcol, field)
    ny, nx = validate_shape(shape)
    ra0 = _check("ra0", ra0, positive=False)
    dec0 = _check("dec0", dec0, positive=False)
    if not -90.0 < dec0 < 90.0:
        raise ValueError(f"dec0 must be strictly between -90 and 90 degrees, got {dec0!r}")
    if scan_angle_deg is not None:
        scan_angle_deg = _check("scan_angle_deg", scan_angle_deg, positive=False)
        if abs(scan_angle_deg) >= 90.0:
            raise ValueError(f"scan_angle_deg must be within (-90, 90), got {scan_angle_deg!r}")
    if fwhm_r_arcsec is not None:
        fwhm_r_arcsec = _check("fwhm_r_arcsec (seeing)", fwhm_r_arcsec)

    # --- field-wide draws (fixed order: keeps a seed's field stable when bands change)
    if scan_angle_deg is None:
        scan_angle_deg = float(rng.uniform(*SCAN_ANGLE_RANGE_DEG))
    if fwhm_r_arcsec is None:
        lo = math.log((SEEING_LIMITS[0] - SEEING_OFFSET) / SEEING_SCALE) / SEEING_SIGMA
        hi = math.log((SEEING_LIMITS[1] - SEEING_OFFSET) / SEEING_SCALE) / SEEING_SIGMA
        fwhm_r = SEEING_OFFSET + SEEING_SCALE * math.exp(SEEING_SIGMA * _truncated_normal(rng, lo, hi))
    else:
        fwhm_r = fwhm_r_arcsec
    beta = float(rng.uniform(3.0, 4.8))
    wing_fraction = float(rng.uniform(0.03, 0.07))
    wing_scale = float(rng.uniform(2.5, 3.5))
    wing_beta = float(rng.uniform(2.2, 2.8))
    sky_common = SKY_COMMON_SIGMA * float(rng.standard_normal())
    mjd = float(rng.uniform(*MJD_RANGE))
    airmass = float(rng.uniform(1.0, 1.4))
    cr_rate = float(rng.uniform(*COSMIC_RAY_RATE_RANGE))

    wcs_r = tan_wcs_header(ra0, dec0, scan_angle_deg, (ny, nx))
    bands: dict[str, BandConditions] = {}
    for band in sdss.BANDS:
        law = (WAVELENGTH_A[band] / WAVELENGTH_A["r"]) ** -0.3
        jitter = 1.0 if band == "r" else math.exp(SEEING_BAND_JITTER * _truncated_normal(rng, -3, 3))
        fwhm = fwhm_r * law * FWHM_EXTRA[band] * jitter
        # z's red halo puts more light in the wings
        wf = min(wing_fraction + (0.03 if band == "z" else 0.0), 0.2)
        psf = PSFParams(fwhm_px=fwhm / sdss.PIXEL_SCALE_ARCSEC, beta=beta, wing_fraction=wf,
                        wing_scale=wing_scale, wing_beta=wing_beta)

        med = sdss.SKY_NMGY_PER_ARCSEC2[band]
        s_lo, s_hi = SKY_LIMITS[band]
        sig = SKY_BAND_SIGMA[band]
        z = _truncated_normal(rng, (math.log(s_lo / med) - sky_common) / sig, (math.log(s_hi / med) - sky_common) / sig)
        sky = med * math.exp(sky_common + sig * z)
        gradient = (float(rng.normal(0.0, 0.004)), float(rng.normal(0.0, 0.004)))

        nmgy = float(rng.uniform(*NMGY_RANGE[band]))
        calib = _calib_vector(rng, nmgy, nx)

        if band == sdss.REFERENCE_BAND:
            wcs = dict(wcs_r)
        else:
            dx, dy = (float(np.clip(v, -BAND_OFFSET_MAX_PX, BAND_OFFSET_MAX_PX))
                      for v in rng.normal(0.0, BAND_OFFSET_SD_PX, 2))
            rot = float(rng.normal(0.0, BAND_ROTATION_SD_RAD))
            scale = PIXEL_SCALE_DEG * (1.0 + float(rng.normal(0.0, BAND_SCALE_SD)))
            ra_b, dec_b = _r_pixel_to_world(wcs_r, wcs_r["CRPIX1"] - 1 + dx, wcs_r["CRPIX2"] - 1 + dy)
            wcs = tan_wcs_header(ra_b, dec_b, scan_angle_deg, (ny, nx), scale_deg=scale, rotation_rad=rot)
        tai = _tai_from_mjd(mjd) + sdss.DRIFT_ORDER.index(band) * sdss.DRIFT_DELAY_S
        bands[band] = BandConditions(
            band=band, fwhm_arcsec=fwhm, psf=psf, sky_nmgy_arcsec2=sky, sky_gradient=gradient,
            gain=sdss.gain(band, camcol), dark_variance=sdss.dark_variance(band, camcol), calib=calib,
            wcs_header=wcs, tai=tai, airmass=airmass, cosmic_ray_rate=cr_rate,
            bad_columns=_bad_columns(camcol, band, nx, ny),
        )
    return FieldConditions(run=int(run), camcol=int(camcol), field=int(field), ra0=ra0 % 360.0, dec0=dec0,
                           scan_angle_deg=float(scan_angle_deg), mjd=mjd, shape=(ny, nx), bands=bands)


def _r_pixel_to_world(wcs_header: dict, x: float, y: float) -> tuple[float, float]:
    """Sky position of 0-based pixel ``(x, y)`` under a TAN header dict (gnomonic inverse).

    Done by hand because building an astropy WCS per band costs ~10 ms, which dominates
    drawing many fields; the tests check it against astropy.
    """
    h = wcs_header
    u, v = x + 1.0 - h["CRPIX1"], y + 1.0 - h["CRPIX2"]
    xi = math.radians(h["CD1_1"] * u + h["CD1_2"] * v)
    eta = math.radians(h["CD2_1"] * u + h["CD2_2"] * v)
    ra0, dec0 = math.radians(h["CRVAL1"]), math.radians(h["CRVAL2"])
    rho = math.hypot(xi, eta)
    if rho == 0.0:
        return float(h["CRVAL1"]), float(h["CRVAL2"])
    c = math.atan(rho)
    dec = math.asin(math.cos(c) * math.sin(dec0) + eta * math.sin(c) * math.cos(dec0) / rho)
    ra = ra0 + math.atan2(xi * math.sin(c), rho * math.cos(dec0) * math.cos(c) - eta * math.sin(dec0) * math.sin(c))
    return math.degrees(ra) % 360.0, math.degrees(dec)
