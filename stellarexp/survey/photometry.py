"""PSF photometry measured on frames: the catalogue of the synthetic survey.

SDSS's psfMag comes from fitting the frame's PSF model (psField) to each object. The synthetic
survey does the same on its simulated frames with photutils' ``PSFPhotometry`` and the band's
PSF model (the survey's stand-in for psField), fitting position and flux of each labelled
star with its neighbours' light left in the data, exactly as a catalogue would see it.
Nothing is copied from the truth: that keeps the magnitude/colour baselines on equal terms
with the image models.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from astropy.table import QTable
from photutils.psf import ImagePSF, PSFPhotometry

from stellarexp import sdss


def image_psf(stamp: np.ndarray, oversampling: int, *, normalise: bool = False):
    """Wrap an oversampled, pixel-integrated PSF stamp as a photutils ``ImagePSF``.

    Parameters
    ----------
    stamp : numpy.ndarray
        Flux a native pixel centred at each sub-pixel sample receives from a unit-flux star.
    oversampling : int
    normalise : bool
        False (default) keeps the stamp's own normalisation, so the light in the wings beyond
        the stamp is accounted for and the fitted ``flux`` is the TOTAL flux (what psfMag
        reports after SDSS's aperture correction). True rescales the stamp to unit sum.
    """
    stamp = np.asarray(stamp, dtype=float)
    if normalise:
        stamp = stamp / stamp.sum() * oversampling**2  # ImagePSF integrates over native pixels
    return ImagePSF(stamp, oversampling=oversampling)


def measure_psf_fluxes(image: np.ndarray, sigma: np.ndarray, x, y, psf_model, *, fit_shape: int = 11,
                       max_shift: float = 1.5, error_floor: float = 0.0) -> pd.DataFrame:
    """Fit the PSF at each (x, y) and return fitted flux, error and position.

    Parameters
    ----------
    image : numpy.ndarray
        Sky-subtracted frame in nanomaggies.
    sigma : numpy.ndarray
        Per-pixel 1-sigma noise (nanomaggies), same shape as ``image``.
    x, y : array-like
        Initial pixel positions (0-based) of the sources to measure.
    psf_model : astropy model
        PSF with parameters ``x_0, y_0, flux`` (e.g. from :func:`image_psf`).
    fit_shape : int
        Odd side of the fitted box in pixels.
    max_shift : float
        Largest allowed centroid shift (pixels) from the initial position.
    error_floor : float
        Fractional PSF-model error added in quadrature to the fit's statistical error (real
        SDSS catalogues show a ~1-1.5% floor in PSFFLUX errors of bright stars).

    Returns
    -------
    pandas.DataFrame
        Columns ``flux``, ``flux_err``, ``x_fit``, ``y_fit``, ``qfit`` (NaN where the fit failed).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    out = pd.DataFrame({"flux": np.full(n, np.nan), "flux_err": np.full(n, np.nan),
                        "x_fit": np.full(n, np.nan), "y_fit": np.full(n, np.nan), "qfit": np.full(n, np.nan)})
    if n == 0:
        return out
    ny, nx = image.shape
    half = fit_shape // 2
    inside = (x >= half) & (x < nx - half - 1) & (y >= half) & (y < ny - half - 1)
    if not inside.any():
        return out
    idx = np.flatnonzero(inside)
    init = QTable({"id": np.arange(1, len(idx) + 1), "x": x[idx], "y": y[idx]})
    # initial flux: sum in the fit box, fine as a starting point for the linear flux parameter
    init["flux"] = [float(image[round(yy) - half:round(yy) + half + 1,
                                round(xx) - half:round(xx) + half + 1].sum()) for xx, yy in zip(x[idx], y[idx])]
    phot = PSFPhotometry(psf_model, (fit_shape, fit_shape), xy_bounds=(max_shift, max_shift),
                         aperture_radius=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils warns per non-converged fit; flags carry it
        res = phot(image, error=sigma, init_params=init)
    res = res.to_pandas() if hasattr(res, "to_pandas") else pd.DataFrame(res)
    flux_col = "flux_fit"
    out.loc[idx, "flux"] = res[flux_col].to_numpy(dtype=float)
    stat_err = res["flux_err"].to_numpy(dtype=float) if "flux_err" in res else np.full(len(idx), np.nan)
    flux = res[flux_col].to_numpy(dtype=float)
    out.loc[idx, "flux_err"] = np.sqrt(stat_err**2 + (error_floor * flux) ** 2)
    out.loc[idx, "x_fit"] = res["x_fit"].to_numpy(dtype=float)
    out.loc[idx, "y_fit"] = res["y_fit"].to_numpy(dtype=float)
    if "qfit" in res:
        out.loc[idx, "qfit"] = res["qfit"].to_numpy(dtype=float)
    return out


def catalogue_magnitudes(flux: np.ndarray, flux_err: np.ndarray, band: str) -> tuple[np.ndarray, np.ndarray]:
    """SDSS-style asinh psfMag and psfMagErr from a PSF flux and its error (nanomaggies)."""
    return sdss.asinh_mag(flux, band), sdss.asinh_mag_err(flux, flux_err, band)
