"""Stars of a field without a catalogue: detected on the r frame and measured in every band.

For a field that has frames but no SDSS catalogue row (no calibObj, no CasJobs access), the
cross-match table is built from the frames themselves (photutils):

1. the r frame's PSF FWHM is fitted on bright sources (:func:`photutils.psf.fit_fwhm`);
2. sources are found with :class:`photutils.detection.DAOStarFinder` above ``threshold_sigma``
   times the sigma-clipped pixel noise, away from the frame edges by half a cutout;
3. each source's position is carried to every band through that band's own WCS (the bands are
   exposed 71.72 s apart and are not aligned pixel for pixel);
4. fluxes are aperture sums with a local sky annulus (:class:`photutils.aperture.ApertureStats`),
   errors from the frame's own noise model (gain, dark variance, sky), scaled to total flux by
   an aperture correction measured on the field's bright stars (the ratio of a large to the
   measuring aperture): the stand-in for SDSS's PSF flux;
5. stars are told from galaxies by concentration: the r magnitude difference between a small and
   the measuring aperture is the PSF's for a point source; a source more extended than the bright
   stars' value by more than 3 sigma (its own error and the stars' scatter) is not a star.

Magnitudes are Pogson (``22.5 - 2.5 log10(flux)``, as calibObj's psfMag). The field's extinction
comes from a given E(B-V) (SFD) times SDSS's coefficients; photo flags are 0 (nothing is known),
the object id is SDSS's bit layout with the detection's running number (not an SDSS objID).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from astropy.stats import sigma_clipped_stats
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture
from photutils.detection import DAOStarFinder
from photutils.psf import fit_fwhm

from stellarexp import sdss
from stellarexp.constants import MAD_TO_SIGMA

log = logging.getLogger(__name__)

PIXEL_ARCSEC = 0.396  # SDSS imaging camera pixel


@dataclass(frozen=True)
class DetectionSettings:
    """How stars are found and measured (``stellarexp/conf/crossmatch.yaml``, ``detect``).

    Attributes
    ----------
    threshold_sigma : float
        Detection threshold in units of the r frame's sigma-clipped pixel noise.
    edge_px : int
        Sources closer than this to an edge of any band's frame are dropped (half a cutout).
    aperture_fwhm : float
        Radius of the measuring aperture in units of the fitted FWHM.
    large_aperture_arcsec : float
        Radius of the aperture-correction reference (SDSS normalises PSF fluxes to 7.4").
    annulus_arcsec : tuple of float
        Inner and outer radii of the sky annulus.
    bright_stars : int
        Brightest isolated point sources used for the FWHM, aperture correction and the
        concentration of a star.
    """

    threshold_sigma: float = 5.0
    edge_px: int = 24
    aperture_fwhm: float = 1.0
    large_aperture_arcsec: float = 7.4
    annulus_arcsec: tuple[float, float] = (10.0, 14.0)
    bright_stars: int = 20


def _radius_px(arcsec: float) -> float:
    return float(arcsec) / PIXEL_ARCSEC


def find_sources(frame, settings: DetectionSettings) -> tuple[pd.DataFrame, float]:
    """Sources on ``frame`` (the r band) and the fitted FWHM in pixels."""
    img = np.asarray(frame.image, float)
    _, median, std = sigma_clipped_stats(img, sigma=3.0)
    guess = 1.4 / PIXEL_ARCSEC  # SDSS's median seeing, refined below
    finder = DAOStarFinder(threshold=settings.threshold_sigma * std, fwhm=guess,
                           exclude_border=True)
    found = finder(img - median)
    if found is None or len(found) == 0:
        raise ValueError(f"{frame.path}: no source above {settings.threshold_sigma} sigma")
    table = found.to_pandas()
    bright = table.nlargest(settings.bright_stars, "flux")
    xy = np.column_stack([bright["x_centroid"], bright["y_centroid"]])
    fwhm = np.asarray(fit_fwhm(img - median, xypos=xy, fwhm=guess, fit_shape=(11, 11)), float)
    fwhm = float(np.nanmedian(fwhm[(fwhm > 1.0) & (fwhm < 10.0)])) if np.isfinite(fwhm).any() else guess
    found = DAOStarFinder(threshold=settings.threshold_sigma * std, fwhm=fwhm,
                          exclude_border=True)(img - median)
    table = found.to_pandas() if found is not None else table
    log.info("%s: %d sources above %.1f sigma, FWHM %.2f px (%.2f arcsec)", frame.path.name,
             len(table), settings.threshold_sigma, fwhm, fwhm * PIXEL_ARCSEC)
    return table.rename(columns={"x_centroid": "x", "y_centroid": "y"})[["x", "y", "flux"]], fwhm


def aperture_fluxes(frame, x, y, radius_px: float, annulus_px: tuple[float, float], sigma=None):
    """Sky-subtracted aperture flux and its 1-sigma error (nanomaggies) at pixel positions;
    ``sigma`` is the frame's noise map (computed when not given)."""
    xy = np.column_stack([x, y])
    img = np.asarray(frame.image, float)
    sigma = frame.sigma() if sigma is None else sigma
    bkg = ApertureStats(img, CircularAnnulus(xy, *annulus_px), sigma_clip=None,
                        sum_method="center").median
    stats = ApertureStats(img, CircularAperture(xy, radius_px), error=sigma, local_bkg=bkg)
    return np.asarray(stats.sum, float), np.asarray(stats.sum_err, float)


def aperture_correction(frame, xy, stars, flux, err, big_px: float, sigma,
                        min_snr: float = 50.0) -> float:
    """Median ratio of the large to the measuring aperture's flux over the bright point sources
    ``stars`` of one band with a measuring S/N above ``min_snr`` (at least the 3 best)."""
    if not len(stars):
        return 1.0
    snr = flux[stars] / err[stars]
    keep = stars[snr >= min_snr] if (snr >= min_snr).sum() >= 3 else stars[np.argsort(-snr)[:3]]
    f_big, _ = aperture_fluxes(frame, xy[0][keep], xy[1][keep], big_px,
                               (big_px + 2.0, big_px + 6.0), sigma)
    return float(np.median(f_big / flux[keep]))


def measure_field(frames: dict, settings: DetectionSettings, *, ebv: float) -> pd.DataFrame:
    """Detect, measure and classify the stars of one field (module docstring).

    Parameters
    ----------
    frames : dict
        Band -> :class:`stellarexp.sdss.frames.Frame` of one field (all five bands).
    settings : DetectionSettings
    ebv : float
        SFD E(B-V) of the field (extinction per band: ``EXTINCTION_COEFF[band] * ebv``).

    Returns
    -------
    pandas.DataFrame
        One row per detected source: ``ra``, ``dec``, ``x_r``, ``y_r``, per band ``flux_<b>``,
        ``flux_err_<b>``, ``psfmag_<b>``, ``psfmagerr_<b>``, ``apcor_<b>``, ``extinction_<b>``,
        ``concentration`` and ``is_star``.
    """
    r = frames["r"]
    sources, fwhm = find_sources(r, settings)
    world = r.wcs.pixel_to_world(sources["x"].to_numpy(), sources["y"].to_numpy())
    out = pd.DataFrame({"ra": world.ra.deg, "dec": world.dec.deg,
                        "x_r": sources["x"].to_numpy(), "y_r": sources["y"].to_numpy()})
    rad = settings.aperture_fwhm * fwhm
    big = _radius_px(settings.large_aperture_arcsec)
    ann = tuple(_radius_px(a) for a in settings.annulus_arcsec)
    inside = np.ones(len(out), bool)
    pos = {}
    for b in sdss.BANDS:
        x, y = frames[b].wcs.world_to_pixel(world)
        ny, nx = frames[b].image.shape
        e = settings.edge_px
        inside &= (x >= e) & (x < nx - e) & (y >= e) & (y < ny - e)
        pos[b] = (np.asarray(x, float), np.asarray(y, float))
    out = out[inside].reset_index(drop=True)
    pos = {b: (x[inside], y[inside]) for b, (x, y) in pos.items()}
    if out.empty:
        raise ValueError("no detected source lies inside every band's frame")
    sigma = {b: frames[b].sigma() for b in sdss.BANDS}  # each band's noise map, once
    # the bright sources decide the aperture correction and what a point source looks like
    f_small, _ = aperture_fluxes(r, *pos["r"], 0.5 * rad, ann, sigma["r"])
    f_r, e_r = aperture_fluxes(r, *pos["r"], rad, ann, sigma["r"])
    with np.errstate(divide="ignore", invalid="ignore"):
        conc = 2.5 * np.log10(f_r / f_small)
        conc_err = 1.0857 * np.hypot(e_r / f_r, e_r / f_small)
    bright = np.argsort(-np.where(np.isfinite(conc), f_r / e_r, -np.inf))[:settings.bright_stars]
    c_star = float(np.median(conc[bright]))
    c_scatter = MAD_TO_SIGMA * float(np.median(np.abs(conc[bright] - c_star)))
    out["concentration"] = conc
    out["is_star"] = np.isfinite(conc) & (conc - c_star <= 3.0 * np.hypot(c_scatter, conc_err))
    stars = bright[out["is_star"].to_numpy()[bright]]
    for b in sdss.BANDS:
        f, e = (f_r, e_r) if b == "r" else aperture_fluxes(frames[b], *pos[b], rad, ann, sigma[b])
        apcor = aperture_correction(frames[b], pos[b], stars, f, e, big, sigma[b])
        out[f"flux_{b}"], out[f"flux_err_{b}"] = f * apcor, e * apcor
        out[f"apcor_{b}"] = apcor
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"psfmag_{b}"] = np.where(f > 0, sdss.nmgy_to_mag(f * apcor), np.nan)
            out[f"psfmagerr_{b}"] = np.where(f > 0, 1.0857 * e / f, np.nan)
        out[f"extinction_{b}"] = sdss.EXTINCTION_COEFF[b] * float(ebv)
    log.info("%d sources inside every band, %d point sources (concentration %.3f +- %.3f mag)",
             len(out), int(out["is_star"].sum()), c_star, c_scatter)
    return out
