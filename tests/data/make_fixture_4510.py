"""Derive the small real fixture ``tests/data/sdss_4510_4_30`` from the full DR17 field 4510-4-30.

Run once from the repository root (needs the read-only ``../shared`` data)::

    .venv/bin/python tests/data/make_fixture_4510.py [--src /work/shared/data/sdss/frames/4510-4-30]

Every band is cut to the same pixel rectangle (rows ``Y0:Y1``, columns ``X0:X1``, 0-based) with
its pixel values untouched; only what the crop forces is changed:

* HDU0: the image slice; ``CRPIX1 -= X0`` and ``CRPIX2 -= Y0`` so the real TAN WCS still maps
  every kept pixel to the same sky position; a HISTORY card records the crop.
* HDU1: the calibration vector restricted to the kept columns.
* HDU2: XINTERP/YINTERP restricted to the kept columns/rows; ALLSKY cut to the bins they reach
  (one bin of slack) and XINTERP/YINTERP shifted by the removed bins, so the interpolated sky is
  identical (checked below).
* HDU3: copied as is.

The catalogue file keeps the calibObj rows of field 30 whose r-band position (real WCS) falls
inside the crop, all columns unchanged (ROWC/COLC stay in full-frame pixel coordinates).
"""

from __future__ import annotations

import argparse
import bz2
import io
import warnings
from pathlib import Path

import numpy as np

RUN, CAMCOL, FIELD = 4510, 4, 30
# Chosen to hold the most 15 < r < 19 stars (8) and r-SNR > 50 stars of the field at 40 px
# clearance, within a ~720k-pixel footprint (~0.7 MB per band after bz2).
X0, X1 = 800, 1904
Y0, Y1 = 32, 684
OUT = Path(__file__).resolve().parent / "sdss_4510_4_30"


def _crop_sky(tab, hdr):
    from astropy.io import fits

    allsky = np.asarray(tab["ALLSKY"][0], np.float32)
    xi = np.asarray(tab["XINTERP"][0], np.float32)[X0:X1]
    yi = np.asarray(tab["YINTERP"][0], np.float32)[Y0:Y1]
    ny, nx = allsky.shape
    bx0, bx1 = max(0, int(np.floor(xi.min())) - 1), min(nx, int(np.ceil(xi.max())) + 2)
    by0, by1 = max(0, int(np.floor(yi.min())) - 1), min(ny, int(np.ceil(yi.max())) + 2)
    sub = allsky[by0:by1, bx0:bx1]
    cols = [
        fits.Column(name="ALLSKY", format=f"{sub.size}E", dim=f"({sub.shape[1]}, {sub.shape[0]})", array=sub[None]),
        fits.Column(name="XINTERP", format=f"{xi.size}E", array=(xi - bx0)[None]),
        fits.Column(name="YINTERP", format=f"{yi.size}E", array=(yi - by0)[None]),
    ]
    out = fits.BinTableHDU.from_columns(cols)
    out.header["HISTORY"] = f"stellarexp fixture: ALLSKY bins y {by0}:{by1}, x {bx0}:{bx1} of the original {ny}x{nx}"
    return out


def crop_frame(src: Path, dst: Path) -> None:
    """Write the cropped copy of one corrected frame (see the module docstring)."""
    from astropy.io import fits

    with fits.open(src) as hdul:
        hdr = hdul[0].header.copy()
        for key in ("BZERO", "BSCALE"):
            hdr.remove(key, ignore_missing=True)
        hdr["CRPIX1"] = hdr["CRPIX1"] - X0
        hdr["CRPIX2"] = hdr["CRPIX2"] - Y0
        hdr["HISTORY"] = (f"stellarexp test fixture: rows {Y0}:{Y1}, cols {X0}:{X1} (0-based) of the DR17 frame; "
                          "CRPIX shifted accordingly")
        image = np.ascontiguousarray(hdul[0].data[Y0:Y1, X0:X1], dtype=np.float32)
        calib = np.ascontiguousarray(hdul[1].data[X0:X1], dtype=np.float32)
        sky = _crop_sky(hdul[2].data, hdul[2].header)
        out = fits.HDUList([fits.PrimaryHDU(image, header=hdr), fits.ImageHDU(calib, header=hdul[1].header.copy()),
                            sky, hdul[3].copy()])
        buf = io.BytesIO()
        out.writeto(buf)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bz2.compress(buf.getvalue(), 9))


def _check(src: Path, dst: Path) -> None:
    from stellarexp.sdss.frames import read_frame

    full, crop = read_frame(src), read_frame(dst)
    assert np.array_equal(full.image[Y0:Y1, X0:X1], crop.image)
    assert np.allclose(full.sky[Y0:Y1, X0:X1], crop.sky, rtol=0, atol=1e-3)
    xy = np.array([[10.0, 20.0], [500.3, 600.7]])
    sky_full = full.wcs.all_pix2world(xy + [X0, Y0], 0)
    sky_crop = crop.wcs.all_pix2world(xy, 0)
    assert np.allclose(sky_full, sky_crop, atol=1e-10)


def crop_catalogue(src: Path, dst: Path, wcs_r) -> int:
    """Keep field-30 calibObj rows whose r position lies inside the crop; return their count."""
    from astropy.io import fits

    with fits.open(src) as hdul:
        data = hdul[1].data
        rows = data[data["FIELD"] == FIELD]
        x, y = wcs_r.all_world2pix(rows["RA"], rows["DEC"], 0)
        inside = (x >= X0 - 0.5) & (x < X1 - 0.5) & (y >= Y0 - 0.5) & (y < Y1 - 0.5)
        hdu = fits.BinTableHDU(rows[inside], header=hdul[1].header.copy())
        hdu.header["HISTORY"] = (f"stellarexp fixture: field {FIELD} rows inside frame rows {Y0}:{Y1}, "
                                 f"cols {X0}:{X1}; ROWC/COLC are full-frame coordinates")
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(dst, overwrite=True)
    return int(inside.sum())


def main() -> None:
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path("/work/shared/data/sdss/frames/4510-4-30"))
    args = ap.parse_args()
    rel = Path("frames/301") / str(RUN) / str(CAMCOL)
    for band in "ugriz":
        name = f"frame-{band}-{RUN:06d}-{CAMCOL}-{FIELD:04d}.fits.bz2"
        crop_frame(args.src / name, OUT / rel / name)
        _check(args.src / name, OUT / rel / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs_r = WCS(fits.getheader(args.src / f"frame-r-{RUN:06d}-{CAMCOL}-{FIELD:04d}.fits.bz2"))
    n = crop_catalogue(args.src / f"calibObj-{RUN:06d}-{CAMCOL}-star.fits.gz",
                       OUT / f"calibObj-{RUN:06d}-{CAMCOL}-{FIELD:04d}-crop.fits.gz", wcs_r)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT}: {n} catalogue stars, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
