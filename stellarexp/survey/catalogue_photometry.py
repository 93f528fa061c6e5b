"""The catalogue's photometry of a rendered field: noise map, PSF model, PSF-fit fluxes.

What a photometric pipeline reports for the sources of one rendered band: the per-pixel noise
the frame reader would compute, the catalogue's estimate of the PSF (slightly off the true one)
and PSF-fit fluxes with their errors (floor included). Used by the simulation of each field
(:func:`stellarexp.survey.simulate.simulate_field`) and by the realism report's twin of the
calibObj anchor (:mod:`stellarexp.survey.realism.twin`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from stellarexp import sdss
from stellarexp.sdss.frames import sky_image
from stellarexp.survey import photometry, psf


def field_star_photometry(rb, noise, neighbours: pd.DataFrame, n_labelled: int, stamp, ovs, spec,
                           max_stars: int = 120) -> pd.DataFrame:
    """Measure r-band PSF fluxes of a sample of field stars (14 < r < 22.5, inside the frame)."""
    x = np.asarray(rb.x[n_labelled:], dtype=float)
    y = np.asarray(rb.y[n_labelled:], dtype=float)
    mag = neighbours["mag_r"].to_numpy()
    m = spec.edge_margin_px
    ok = (mag > 14) & (mag < 22.5) & (x > m) & (x < sdss.NAXIS1 - m) & (y > m) & (y < sdss.NAXIS2 - m)
    idx = np.flatnonzero(ok)[:max_stars]
    meas = photometry.measure_psf_fluxes(rb.image, noise, x[idx], y[idx], photometry.image_psf(stamp, ovs),
                                         error_floor=dict(spec.psf_model_error_floor)["r"])
    return pd.DataFrame({"mag_r_true": mag[idx], "psfFlux_r": meas["flux"].to_numpy(),
                         "psfFluxErr_r": meas["flux_err"].to_numpy()})


def measure_band(rb, bc, x, y, spec, rng):
    """PSF photometry of the sources at ``x, y`` on one rendered band, as the catalogue does it.

    Returns
    -------
    meas, noise, stamp, oversampling
        The fits (``flux``, ``flux_err``, ``x_fit``, ``y_fit``), the per-pixel noise map and the
        catalogue's PSF model as an oversampled stamp.
    """
    # the fit's weights and reported errors use the pipeline's variance, which may leave out the
    # dark variance that the pixels hold (data.catalogue_error_dark_variance, docs/simulation.md)
    noise = noise_map(rb, bc, dark_variance=spec.catalogue_error_dark_variance)
    model = catalogue_psf(bc.psf, rng, spec.psf_model_fwhm_error)
    stamp, ovs = psf.oversampled_stamp(model, size=25, oversampling=4)
    floor = dict(spec.psf_model_error_floor)[rb.band]
    meas = photometry.measure_psf_fluxes(rb.image, noise, x, y, photometry.image_psf(stamp, ovs), error_floor=floor)
    return meas, noise, stamp, ovs


def catalogue_psf(true_psf, rng, fwhm_error: float):
    """The PSF model a photometric pipeline would estimate: the true one, FWHM slightly off."""
    scale = 1.0 + (rng.normal(0.0, fwhm_error) if fwhm_error > 0 else 0.0)
    return dataclasses.replace(true_psf, fwhm_px=true_psf.fwhm_px * scale)


def noise_map(rb, bc, *, dark_variance: bool = True) -> np.ndarray:
    """Per-pixel sigma (nanomaggies): sky and source Poisson noise, plus the CCD's dark variance
    unless ``dark_variance`` is false.

    With the dark variance it is the noise the pixels hold, as the frame reader computes it
    (``sqrt(dn / gain + darkVariance)``); without it, the variance SDSS's photometric pipeline
    reports errors from (docs/simulation.md, "Reported errors").
    """
    sky = sky_image(rb.allsky, rb.xinterp, rb.yinterp)
    if dark_variance:
        dn = np.clip(rb.image / rb.calib[None, :] + sky, 0.0, None)
        return np.sqrt(dn / bc.gain + bc.dark_variance) * rb.calib[None, :]
    # the pipeline's own variance: the smooth sky plus the (positive) source counts, so a pixel
    # that noise pulls below zero still gets the sky's variance
    dn = sky + np.clip(rb.image / rb.calib[None, :], 0.0, None)
    return np.sqrt(dn / bc.gain) * rb.calib[None, :]
