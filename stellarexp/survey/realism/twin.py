"""The anchor's twin: the survey's own photometry of the anchor's stars, in the anchor's conditions.

Faint stars' errors are sky-limited: they grow with the PSF width and the square root of the sky.
The calibObj anchor (run 4510, camcol 4) was taken on a dark night with good seeing (median u
PSF FWHM 1.16", u sky 0.98 nanomaggies per arcsec^2), while the survey draws SDSS-wide conditions
(u about 1.66" and 1.5); comparing the survey's fields with the anchor would judge the night, not
the noise model. The twin places the anchor's stars, at their measured fluxes, on fields observed
in the anchor's conditions (its median PSF FWHM, sky and nanomaggies per count per band; camcol
4's gain and dark variance), renders them and measures them with the survey's code
(:func:`stellarexp.survey.catalogue_photometry.measure_band`); its error curve is compared with the anchor's.
Everything else (PSF shape, sky gradient, cosmic rays, calibration vector) is drawn as for any
survey field.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from stellarexp import sdss
from stellarexp.survey import conditions as survey_conditions
from stellarexp.survey import photometry, render
from stellarexp.survey.catalogue_photometry import measure_band

ANCHOR_RUN, ANCHOR_CAMCOL = 4510, 4
ANCHOR_CENTRE = (200.45, 36.81)  # deg: field 30 of the anchor run, a high-latitude sight line
STARS_PER_FIELD = 800  # a real SDSS field holds a few hundred stars; 0.03% of pixels within 2" of one
EDGE_MARGIN_PX = 30


def anchor_conditions(cal: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Median PSF FWHM (arcsec), sky (nanomaggies per arcsec^2) and nanomaggies per count per band
    of the anchor's stars (calibObj ``psf_fwhm_<b>``, ``skyflux_<b>``, ``nmgypercount_<b>``)."""
    missing = [f"{k}_{b}" for k in ("psf_fwhm", "skyflux", "nmgypercount") for b in sdss.BANDS
               if f"{k}_{b}" not in cal]
    if missing:
        raise ValueError(f"the calibObj anchor lacks the condition columns {missing}; rebuild it from a "
                         "calibObj star file (PSF_FWHM, SKYFLUX, NMGYPERCOUNT)")
    return {b: {"fwhm": float(np.median(cal[f"psf_fwhm_{b}"])), "sky": float(np.median(cal[f"skyflux_{b}"])),
                "nmgy": float(np.median(cal[f"nmgypercount_{b}"]))} for b in sdss.BANDS}


def _in_anchor_conditions(cond, conditions: dict[str, dict[str, float]]):
    """``cond`` with each band's seeing, sky and nanomaggies per count set to the anchor's."""
    bands = {}
    for b, bc in cond.bands.items():
        c = conditions[b]
        psf = dataclasses.replace(bc.psf, fwhm_px=c["fwhm"] / sdss.PIXEL_SCALE_ARCSEC)
        bands[b] = dataclasses.replace(bc, fwhm_arcsec=c["fwhm"], psf=psf, sky_nmgy_arcsec2=c["sky"],
                                       calib=np.asarray(bc.calib) * (c["nmgy"] / bc.nmgy))
    return dataclasses.replace(cond, bands=bands)


def twin_catalogue(cal: pd.DataFrame, spec, seed: int, *, stars_per_field: int = STARS_PER_FIELD,
                   shape: tuple[int, int] = (sdss.NAXIS2, sdss.NAXIS1)) -> pd.DataFrame:
    """Render and measure the anchor's stars in the anchor's conditions.

    Parameters
    ----------
    cal : pandas.DataFrame
        Anchor stars: ``psfflux_<b>`` (nanomaggies) and the condition columns of
        :func:`anchor_conditions`.
    spec : stellarexp.survey.simulate.SurveySpec
        The survey's settings (catalogue PSF-model error and error floors).
    seed : int
        Seeds the fields (same seed, same catalogue).
    stars_per_field : int
        Anchor stars per rendered field (at random positions).
    shape : tuple of int
        ``(ny, nx)`` of the rendered frames (SDSS's by default; smaller for fast tests).

    Returns
    -------
    pandas.DataFrame
        ``psfmag_<b>``, ``psfmagerr_<b>`` of each anchor star as the survey measures it.
    """
    conditions = anchor_conditions(cal)
    rng = np.random.default_rng([int(seed), 7])
    order = rng.permutation(len(cal))
    parts = []
    for k, start in enumerate(range(0, len(order), stars_per_field)):
        idx = order[start:start + stars_per_field]
        cond = survey_conditions.draw_field_conditions(ANCHOR_RUN, ANCHOR_CAMCOL, 100 + k, rng,
                                                       ra0=ANCHOR_CENTRE[0], dec0=ANCHOR_CENTRE[1], shape=shape)
        cond = _in_anchor_conditions(cond, conditions)
        x = rng.uniform(EDGE_MARGIN_PX, shape[1] - 1 - EDGE_MARGIN_PX, len(idx))
        y = rng.uniform(EDGE_MARGIN_PX, shape[0] - 1 - EDGE_MARGIN_PX, len(idx))
        sky = WCS(cond.bands[sdss.REFERENCE_BAND].wcs_header).pixel_to_world(x, y)
        sources = pd.DataFrame({"ra": sky.ra.deg, "dec": sky.dec.deg})
        for b in sdss.BANDS:  # a measured flux can be negative for a star near the limit
            sources[f"flux_{b}"] = np.clip(cal[f"psfflux_{b}"].to_numpy(float)[idx], 0.0, None)
        rendered = render.render_field(cond, sources, rng)
        out = pd.DataFrame(index=range(len(idx)))
        for b in sdss.BANDS:
            rb = rendered[b]
            meas = measure_band(rb, cond.bands[b], np.asarray(rb.x, float), np.asarray(rb.y, float), spec, rng)[0]
            mag, err = photometry.catalogue_magnitudes(meas["flux"].to_numpy(), meas["flux_err"].to_numpy(), b)
            out[f"psfmag_{b}"], out[f"psfmagerr_{b}"] = mag, err
        parts.append(out)
    return pd.concat(parts, ignore_index=True)
