"""Read SDSS calibObj star catalogues (``calibObj-{run:06d}-{camcol}-star.fits.gz``).

calibObj holds the photometric pipeline's measurements of every star of one run and camcol:
the real reference for photometry measured on cutouts and for the synthetic survey's noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.io import fits

from stellarexp import sdss


def load_calibobj(path, *, field: int | None = None) -> pd.DataFrame:
    """Read an SDSS calibObj star file into a flat, native-endian table.

    Returns
    -------
    pandas.DataFrame
        ``run, camcol, field, id, obj_id, ra, dec, objc_type`` and per band ``b``:
        ``psfflux_b, psfflux_ivar_b, psfmag_b`` (Pogson, from PSFFLUX), ``psfmagerr_b``,
        ``extinction_b``, ``flags_b``, ``psf_fwhm_b`` (arcsec) and, where the file has them,
        ``skyflux_b`` (nanomaggies per arcsec^2) and ``nmgypercount_b``.
    """
    with fits.open(path) as hdul:
        d = hdul[1].data
        if field is not None:
            d = d[d["FIELD"] == field]
        out = pd.DataFrame({
            "run": d["RUN"].astype(np.int64), "camcol": d["CAMCOL"].astype(np.int64),
            "field": d["FIELD"].astype(np.int64), "id": d["ID"].astype(np.int64),
            "ra": d["RA"].astype(np.float64), "dec": d["DEC"].astype(np.float64),
            "objc_type": d["OBJC_TYPE"].astype(np.int64),
        })
        out["obj_id"] = sdss.obj_id(out["run"], out["camcol"], out["field"], out["id"])
        for k, b in enumerate(sdss.BANDS):
            f = d["PSFFLUX"][:, k].astype(np.float64)
            iv = d["PSFFLUX_IVAR"][:, k].astype(np.float64)
            out[f"psfflux_{b}"] = f
            out[f"psfflux_ivar_{b}"] = iv
            out[f"psfmag_{b}"] = sdss.nmgy_to_mag(f)
            out[f"psfmagerr_{b}"] = sdss.nmgy_ivar_to_mag_err(f, iv)
            out[f"extinction_{b}"] = d["EXTINCTION"][:, k].astype(np.float64)
            out[f"flags_{b}"] = d["FLAGS"][:, k].astype(np.int64)
            out[f"psf_fwhm_{b}"] = d["PSF_FWHM"][:, k].astype(np.float64)
            for col in ("SKYFLUX", "NMGYPERCOUNT"):  # the observing conditions at each star
                if col in d.columns.names:
                    out[f"{col.lower()}_{b}"] = d[col][:, k].astype(np.float64)
    return out
