"""Realism checks of the synthetic survey against real SDSS catalogues.

The main one: the magnitude vs PSF-flux-error curve. For a PSF flux f (nanomaggies), the
variance is ``a + b f`` (sky + read noise, plus the source's own Poisson noise), so fitting
``a, b`` to a catalogue and evaluating at a few magnitudes compares two catalogues without
needing the same stars in both.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from stellarexp.sdss import BANDS, mag_to_nmgy
from stellarexp.survey import conditions, photometry, psf, render
from stellarexp.survey.catalogue_photometry import noise_map


def fit_flux_error_curve(flux, flux_err) -> tuple[float, float]:
    """Fit ``flux_err**2 = a + b * flux`` (robustly, in log-spaced flux bins).

    Parameters
    ----------
    flux, flux_err : array-like
        PSF fluxes and their 1-sigma errors in nanomaggies.

    Returns
    -------
    (a, b) : tuple of float
        Background variance (nmgy^2) and Poisson coefficient (nmgy).
    """
    flux = np.asarray(flux, float)
    err = np.asarray(flux_err, float)
    ok = np.isfinite(flux) & np.isfinite(err) & (flux > 0) & (err > 0)
    if ok.sum() < 5:
        raise ValueError(f"need at least 5 finite positive fluxes to fit the error curve, got {int(ok.sum())}")
    f, v = flux[ok], err[ok] ** 2
    # medians in flux bins keep a few outliers (blends, edges) from steering the fit
    edges = np.quantile(np.log10(f), np.linspace(0, 1, min(12, max(3, ok.sum() // 5)) + 1))
    fb, vb = [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (np.log10(f) >= lo) & (np.log10(f) <= hi)
        if sel.sum() >= 2:
            fb.append(np.median(f[sel]))
            vb.append(np.median(v[sel]))
    fb, vb = np.array(fb), np.array(vb)
    # relative least squares: each bin counts equally whatever its variance
    design = np.stack([1.0 / vb, fb / vb], axis=1)
    a, b = np.linalg.lstsq(design, np.ones_like(vb), rcond=None)[0]
    return float(max(a, 0.0)), float(max(b, 0.0))


def flux_error_at(curve: tuple[float, float], mags) -> np.ndarray:
    """PSF-flux error (nanomaggies) of the fitted curve at the given magnitudes."""
    a, b = curve
    f = mag_to_nmgy(np.asarray(mags, float))
    return np.sqrt(a + b * f)


def simulated_error_curve(*, camcol: int, fwhm_r_arcsec: float, sky_r_nmgy_arcsec2: float, nmgy_r: float,
                          rng, error_floor: float = 0.012, shape=(480, 880), spacing: int = 40,
                          mag_range=(14.0, 22.5), dark_variance: bool = False) -> tuple[float, float]:
    """r-band flux-error curve of the simulator under given observing conditions.

    ``dark_variance``: whether the reported errors include the CCD's dark variance (the
    catalogue's default, ``data.catalogue_error_dark_variance``, leaves it out).

    Renders an isolated grid of stars (no blending) into an r frame whose seeing, sky and
    calibration are those given (e.g. measured on a real frame), measures them with the
    catalogue's PSF photometry and fits ``err^2 = a + b f``. Comparing with the real catalogue
    of the same field then tests the noise model and the photometry, not the luck of the draw.
    """
    cond = conditions.draw_field_conditions(9999, camcol, 11, rng, ra0=180.0, dec0=30.0,
                                            fwhm_r_arcsec=fwhm_r_arcsec, shape=shape)
    ny, nx = shape
    band = cond.bands["r"]
    cond.bands["r"] = dataclasses.replace(band, sky_nmgy_arcsec2=float(sky_r_nmgy_arcsec2),
                                          calib=np.full(nx, float(nmgy_r), dtype=np.float32))
    gy, gx = np.mgrid[spacing:ny - spacing:spacing, spacing:nx - spacing:spacing]
    x, y = gx.ravel().astype(float), gy.ravel().astype(float)
    mags = rng.uniform(*mag_range, len(x))
    sky = WCS(dict(cond.bands["r"].wcs_header)).pixel_to_world(x, y)
    sources = pd.DataFrame({"ra": sky.ra.deg, "dec": sky.dec.deg})
    for b in BANDS:
        sources[f"flux_{b}"] = mag_to_nmgy(mags)
    rb = render.render_field(cond, sources, rng)["r"]
    noise = noise_map(rb, cond.bands["r"], dark_variance=dark_variance)
    stamp, ovs = psf.oversampled_stamp(cond.bands["r"].psf, size=25, oversampling=4)
    meas = photometry.measure_psf_fluxes(rb.image, noise, rb.x, rb.y, photometry.image_psf(stamp, ovs),
                                         error_floor=error_floor)
    return fit_flux_error_curve(meas["flux"].to_numpy(), meas["flux_err"].to_numpy())
