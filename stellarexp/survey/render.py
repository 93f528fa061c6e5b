"""Render a field's five SDSS corrected frames from its conditions and a source list.

Per band, in detector units (DN):

1. point sources (pixel-integrated PSF, :mod:`stellarexp.survey.psf`) at the positions the band's
   WCS gives, converted from nanomaggies to DN with the column calibration;
2. the sky from the binned ALLSKY map (exactly what a reader reconstructs from HDU2);
3. Poisson noise on sky + sources in electrons (via the gain), plus read noise
   (``darkVariance``, DN^2). Counts are not rounded to whole DN: the noise-relative
   quantisation of the writer (a step of ~sigma/7.4, comparable to the 1-DN steps of real
   frames, sigma/4 to sigma/8) is the only discretisation, so 1.4826 MAD stays unbiased;
4. cosmic-ray tracks; saturation above 65535 DN (SOFTBIAS included) with the excess charge
   bled up and down the column; bad columns of the CCD;
5. sky subtraction and calibration to nanomaggies, then the saturated, cosmic-ray and
   bad-column pixels are interpolated over along rows, as SDSS's corrected frames are. The
   masks are kept (the catalogue turns them into SATURATED / INTERP flags).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from stellarexp import sdss
from stellarexp.sdss.frames import sky_image
from stellarexp.survey.conditions import BIN, BandConditions, FieldConditions
from stellarexp.survey.frame_writer import write_frame
from stellarexp.survey.psf import render_point_sources

FULL_WELL_DN = sdss.SATURATION_DN - sdss.SOFTBIAS
"""Largest sky + source signal (DN) a pixel holds before the ADC saturates at 65535 DN."""
WING_FLOOR = 0.02
"""Stamps reach out to where a source adds less than this fraction of the sky noise per pixel."""
MAD_STEPS = 5
QUANTISE_FRACTION = 0.6744897501960817 / MAD_STEPS
"""Quantisation step in units of the sky noise (~1/7.4). On quantised data the MAD can only
take multiples of the step, so a step that is an integer fraction (1/5) of the sky's expected
MAD keeps ``1.4826 * MAD`` an unbiased noise estimate (with 1/8 of sigma it is off by up to 9%)."""


@dataclass(eq=False)
class RenderedBand:
    """One band of a rendered field: what a frame file holds, plus truth the file does not.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``[ny, nx]`` sky-subtracted image in nanomaggies.
    calib : numpy.ndarray
        float32 ``[nx]`` nanomaggies per count.
    allsky : numpy.ndarray
        float32 binned sky in counts, rows = y bins (``[192, 256]`` for SDSS frames).
    xinterp, yinterp : numpy.ndarray
        float32 bin coordinates of every column / row.
    noise_sigma : float
        Typical sky pixel noise (nanomaggies): median over columns of
        ``sqrt(sky/gain + darkVariance) * calib``.
    saturated : numpy.ndarray
        bool: pixels at the ADC limit (cores and bleed trails), interpolated over.
    interp : numpy.ndarray
        bool: cosmic-ray and bad-column pixels, interpolated over.
    x, y : numpy.ndarray
        0-based pixel positions of every source (input order) under this band's WCS.
    """

    band: str
    image: np.ndarray
    calib: np.ndarray
    allsky: np.ndarray
    xinterp: np.ndarray
    yinterp: np.ndarray
    noise_sigma: float
    saturated: np.ndarray
    interp: np.ndarray
    x: np.ndarray
    y: np.ndarray
    wcs_header: dict
    tai: float
    airmass: float
    extras: dict = field(default_factory=dict)


def sky_grid(shape) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """XINTERP, YINTERP and the ALLSKY shape of the real frames' layout for a frame ``shape``.

    Real frames bin the sky 8 x 8 and start the frame one bin into the map, giving
    ``XINTERP = (x + 0.5)/8 - 0.5`` and ``YINTERP = (y + 0.5)/8 + 0.5`` (a 192 x 256 map for
    1489 x 2048 frames).
    """
    ny, nx = shape
    xinterp = ((np.arange(nx) + 0.5) / BIN - 0.5).astype(np.float32)
    yinterp = ((np.arange(ny) + 0.5) / BIN + 0.5).astype(np.float32)
    n_by = math.ceil(ny / BIN) + 5  # 192 for 1489 rows, as SDSS
    n_bx = math.ceil(nx / BIN)  # 256 for 2048 columns
    return xinterp, yinterp, (n_by, n_bx)


def _allsky(bc: BandConditions, shape_bins: tuple[int, int]) -> np.ndarray:
    """A gently tilted sky plane in counts (the real maps vary by ~0.1-0.2% over a frame)."""
    n_by, n_bx = shape_bins
    gx, gy = bc.sky_gradient
    u = np.linspace(-0.5, 0.5, n_bx)[None, :]
    v = np.linspace(-0.5, 0.5, n_by)[:, None]
    return (bc.sky_counts * (1.0 + gx * u + gy * v)).astype(np.float32)


def _fluxes(sources: pd.DataFrame, band: str) -> np.ndarray:
    col = f"flux_{band}"
    if col in sources:
        flux = sources[col].to_numpy(dtype=float)
    elif f"mag_{band}" in sources:
        flux = sdss.mag_to_nmgy(sources[f"mag_{band}"].to_numpy(dtype=float))
    else:
        raise ValueError(f"sources needs a {col} column (nanomaggies) or mag_{band}")
    if not np.all(np.isfinite(flux)) or np.any(flux < 0):
        raise ValueError(f"sources.{col} must be finite and >= 0 nanomaggies")
    return flux


def _cosmic_rays(rng: np.random.Generator, shape, rate: float, gain: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels hit by cosmic rays and their charge (DN): short straight tracks."""
    ny, nx = shape
    n = int(rng.poisson(rate * (ny * nx) / (sdss.NAXIS1 * sdss.NAXIS2)))
    if n == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0)
    x0 = rng.uniform(0, nx, n)
    y0 = rng.uniform(0, ny, n)
    length = np.minimum(rng.exponential(3.0, n), 25.0)  # most hits graze a few pixels
    angle = rng.uniform(0, np.pi, n)
    charge = rng.lognormal(np.log(1500.0), 0.6, n) / gain  # electrons per pixel -> DN
    steps = np.arange(0.0, 25.5, 0.5)
    t = steps[None, :] * np.ones((n, 1))
    keep = t <= length[:, None]
    xs = (x0[:, None] + t * np.cos(angle)[:, None])[keep]
    ys = (y0[:, None] + t * np.sin(angle)[:, None])[keep]
    q = np.repeat(charge, keep.sum(axis=1))
    ix = np.floor(xs).astype(np.intp)
    iy = np.floor(ys).astype(np.intp)
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    flat = np.unique(iy[ok] * nx + ix[ok], return_index=True)
    idx, first = flat
    return idx // nx, idx % nx, q[ok][first]


def _bleed(counts: np.ndarray) -> np.ndarray:
    """Clip pixels at the full well and spread the excess charge up and down their column.

    Returns the saturated mask (cores and trails). Charge is conserved up to the trail's
    last, partly filled pixel.
    """
    sat = counts > FULL_WELL_DN
    if not sat.any():
        return sat
    ny = counts.shape[0]
    for j in np.flatnonzero(sat.any(axis=0)):
        col = counts[:, j]
        hot = col > FULL_WELL_DN
        excess = float(np.sum(col[hot] - FULL_WELL_DN))
        col[hot] = FULL_WELL_DN
        rows = np.flatnonzero(hot)
        lo, hi = int(rows[0]), int(rows[-1])
        # fill the neighbours above and below alternately until the excess is used up
        while excess > 0 and (lo > 0 or hi < ny - 1):
            for k in (lo - 1, hi + 1):
                if 0 <= k < ny and excess > 0:
                    room = max(FULL_WELL_DN - float(col[k]), 0.0)
                    take = min(room, excess)
                    col[k] += take
                    excess -= take
                    sat[k, j] = True
            lo, hi = max(lo - 1, 0), min(hi + 1, ny - 1)
        sat[rows[0]:rows[-1] + 1, j] |= hot[rows[0]:rows[-1] + 1]
    return sat


def interpolate_rows(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace masked pixels by linear interpolation between the nearest good pixels of the
    same row (SDSS interpolates across columns); a run touching the edge copies its one good
    neighbour, and a fully masked row becomes 0.

    Works on runs of masked pixels, so the cost scales with the masked area, not the frame.
    """
    out = np.array(image, copy=True)
    ny, nx = mask.shape
    if not mask.any():
        return out
    w = nx + 2  # a good sentinel column on each side keeps runs inside their row
    padded = np.zeros((ny, w), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded.ravel())
    starts = np.flatnonzero(step == 1) + 1  # first masked pixel of each run (padded index)
    stops = np.flatnonzero(step == -1) + 1  # first good pixel after it
    row = starts // w
    first = starts % w - 1  # image column of the run's first pixel
    length = stops - starts
    left, right = first - 1, first + length  # good neighbours (image columns), maybe off-image
    has_l, has_r = left >= 0, right < nx
    vl = np.where(has_l, out[row, np.clip(left, 0, nx - 1)], 0.0)
    vr = np.where(has_r, out[row, np.clip(right, 0, nx - 1)], 0.0)
    vl, vr = np.where(has_l, vl, vr), np.where(has_r, vr, vl)
    # per masked pixel: its run and position within it
    run = np.repeat(np.arange(starts.size), length)
    pos = np.arange(run.size) - np.repeat(np.cumsum(length) - length, length) + 1
    frac = pos / (length[run] + 1.0)
    out[row[run], first[run] + pos - 1] = vl[run] + frac * (vr[run] - vl[run])
    return out


def render_band(bc: BandConditions, shape, ra, dec, flux, rng: np.random.Generator) -> RenderedBand:
    """Render one band (see the module docstring for the steps)."""
    ny, nx = shape
    wcs = WCS(dict(bc.wcs_header))
    if len(ra):
        x, y = wcs.wcs_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
    else:
        x = y = np.zeros(0)
    calib = np.asarray(bc.calib, dtype=np.float32)
    xinterp, yinterp, bins = sky_grid((ny, nx))
    allsky = _allsky(bc, bins)
    sky = sky_image(allsky, xinterp, yinterp)
    noise_cols = np.sqrt(sky.mean(axis=0) / bc.gain + bc.dark_variance) * calib
    noise_sigma = float(np.median(noise_cols))

    src = np.zeros((ny, nx), dtype=np.float32)
    if len(x):
        render_point_sources((ny, nx), x, y, flux, bc.psf, floor=WING_FLOOR * noise_sigma, out=src)
    src /= calib[None, :]  # nanomaggies -> DN
    expected = src
    expected += sky
    np.maximum(expected, 0.0, out=expected)
    # Poisson in electrons, then back to DN, plus read noise
    counts = rng.poisson(expected.astype(np.float64) * bc.gain).astype(np.float32)
    counts /= np.float32(bc.gain)
    counts += rng.standard_normal((ny, nx), dtype=np.float32) * np.float32(math.sqrt(bc.dark_variance))

    cr_y, cr_x, cr_q = _cosmic_rays(rng, (ny, nx), bc.cosmic_ray_rate, bc.gain)
    counts[cr_y, cr_x] += cr_q.astype(np.float32)
    interp = np.zeros((ny, nx), dtype=bool)
    interp[cr_y, cr_x] = True
    saturated = _bleed(counts)
    for col, first_row in bc.bad_columns:
        if 0 <= col < nx and first_row < ny:
            counts[first_row:, col] = 0.0  # a dead column: no signal at all
            interp[first_row:, col] = True

    image = (counts - sky) * calib[None, :]
    image = interpolate_rows(image, saturated | interp)
    return RenderedBand(band=bc.band, image=image.astype(np.float32), calib=calib, allsky=allsky, xinterp=xinterp,
                        yinterp=yinterp, noise_sigma=noise_sigma, saturated=saturated, interp=interp,
                        x=np.asarray(x, float), y=np.asarray(y, float), wcs_header=dict(bc.wcs_header),
                        tai=bc.tai, airmass=bc.airmass)


def render_field(cond: FieldConditions, sources: pd.DataFrame, rng: np.random.Generator) -> dict[str, RenderedBand]:
    """Render the five bands of a field.

    Parameters
    ----------
    cond : FieldConditions
    sources : pandas.DataFrame
        Columns ``ra``, ``dec`` (degrees) and ``flux_u`` .. ``flux_z`` (nanomaggies; ``mag_<b>``
        is accepted instead). May be empty.
    rng : numpy.random.Generator
        Noise, cosmic rays (the same state gives identical images).

    Returns
    -------
    dict
        band -> :class:`RenderedBand`, in ``sdss.BANDS`` order.
    """
    for col in ("ra", "dec"):
        if col not in sources:
            raise ValueError(f"sources needs a {col!r} column (degrees)")
    ra = sources["ra"].to_numpy(dtype=float)
    dec = sources["dec"].to_numpy(dtype=float)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError("sources.ra/dec must be finite")
    out = {}
    for band in sdss.BANDS:
        out[band] = render_band(cond.bands[band], cond.shape, ra, dec, _fluxes(sources, band), rng)
    return out


def write_field(frame_root, rendered: dict[str, RenderedBand], run: int, camcol: int, field: int, *,
                quantise_fraction: float = QUANTISE_FRACTION, compresslevel: int = 1) -> list[Path]:
    """Write a rendered field's frames in the SAS layout under ``frame_root``.

    Each frame goes to ``frame_root / frames/301/{run}/{camcol}/frame-{band}-...fits.bz2``,
    quantised to ``quantise_fraction`` of its sky noise, atomically.

    Returns
    -------
    list of pathlib.Path
        The written files, in band order.
    """
    paths = []
    for band in sdss.BANDS:
        if band not in rendered:
            continue
        rb = rendered[band]
        path = Path(frame_root) / sdss.frame_relpath(band, run, camcol, field)
        write_frame(path, rb.image, wcs_header=rb.wcs_header, band=band, run=run, camcol=camcol, field=field,
                    calib=rb.calib, allsky=rb.allsky, xinterp=rb.xinterp, yinterp=rb.yinterp,
                    noise_sigma=rb.noise_sigma, quantise_fraction=quantise_fraction, tai=rb.tai,
                    mjd=rb.tai / 86400.0, airmass=rb.airmass, compresslevel=compresslevel)
        paths.append(path)
    return paths
