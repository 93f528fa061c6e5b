"""Real-data proof of the cutout step: band alignment and photometry on a real SDSS field.

The field's calibObj star catalogue is turned into a CasJobs-style cross-match table and run
through the same pipeline as ``data=sdss`` in label-free mode (:func:`catalog.select_stars`,
then :func:`cutouts.cut_field`). On the accepted cutouts:

* alignment: for stars with r-band SNR above ``min_snr`` (50), each band is centroided with a
  2-D Gaussian (:func:`photutils.centroids.centroid_2dg`) in a small box around the r centroid;
  the signed median offset relative to r is reported per band and axis. For r itself the
  offset is taken relative to the catalogue position projected on the r grid (a check of the
  crop placement and of the frame WCS).
* photometry: aperture flux in ``r_ap`` pixels times an aperture correction MEASURED from the
  curve of growth of the bright accepted stars of the same field (median ratio of the flux in
  the 7.43 arcsec radius that SDSS PSF magnitudes are normalised to, over the flux in
  ``r_ap``), compared with the catalogue PSFFLUX for stars with ``mag_range[0] < r <
  mag_range[1]``. No zero point is fitted.
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.stats import sigma_clipped_stats
from photutils.centroids import centroid_2dg

from stellarexp import sdss
from stellarexp.data import catalog
from stellarexp.data.cutouts import CutoutConfig, CutoutResult, aperture_sum, crop_origin, cut_field
from stellarexp.sdss.calibobj import load_calibobj
from stellarexp.sdss.frames import read_frame

SDSS_PSF_NORM_RADIUS_ARCSEC = 7.43  # PSF magnitudes are tied to this aperture radius
FIXTURE_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "sdss_4510_4_30"


@dataclass
class RealCheck:
    """Result of :func:`check_field`.

    Attributes
    ----------
    alignment : pandas.DataFrame
        One row per band: ``band, n, dx_median, dy_median`` (pixels, band minus r).
    photometry : pandas.DataFrame
        One row per band: ``band, n, aperture_correction, n_apcor, median_dmag,
        median_abs_dmag`` (dmag = measured - catalogue).
    per_star : pandas.DataFrame
        Per-star offsets and delta magnitudes.
    funnel : list of (str, int)
    rejects : pandas.DataFrame
    """

    alignment: pd.DataFrame
    photometry: pd.DataFrame
    per_star: pd.DataFrame
    funnel: list
    rejects: pd.DataFrame
    extras: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Compact JSON-able numbers: offsets and median |dmag| per band."""
        out = {"funnel": [[s, int(n)] for s, n in self.funnel]}
        out["alignment_px"] = {r.band: {"n": int(r.n), "dx": round(float(r.dx_median), 4), "dy": round(float(r.dy_median), 4)}
                               for r in self.alignment.itertuples()}
        out["photometry"] = {r.band: {"n": int(r.n), "apcor": round(float(r.aperture_correction), 4),
                                      "median_dmag": round(float(r.median_dmag), 4),
                                      "median_abs_dmag": round(float(r.median_abs_dmag), 4)}
                             for r in self.photometry.itertuples()}
        return out


def calibobj_to_crossmatch(cat: pd.DataFrame) -> pd.DataFrame:
    """A CasJobs-style cross-match table (label-free: no APOGEE columns) from calibObj rows."""
    out = pd.DataFrame({"run": cat["run"], "camcol": cat["camcol"], "field": cat["field"], "objID": cat["obj_id"],
                        "photoobj_ra": cat["ra"], "photoobj_dec": cat["dec"]})
    for b in sdss.BANDS:
        out[f"flags_{b}"] = cat[f"flags_{b}"]
    for b in sdss.BANDS:
        out[f"psfMag_{b}"] = cat[f"psfmag_{b}"].fillna(sdss.LABEL_SENTINEL)
        out[f"psfMagErr_{b}"] = cat[f"psfmagerr_{b}"].fillna(sdss.LABEL_SENTINEL)
    for b in sdss.BANDS:
        out[f"extinction_{b}"] = cat[f"extinction_{b}"]
    return out


def locate_field(field_dir, run: int, camcol: int, field: int) -> tuple[dict, Path | None]:
    """Find a field's frame files (SAS layout under ``field_dir`` or flat in it) and its calibObj.

    Returns
    -------
    paths : dict
        Band -> frame path.
    calibobj : pathlib.Path or None
    """
    root = Path(field_dir)
    paths = {b: sdss.frame_path(root, b, run, camcol, field) for b in sdss.BANDS}
    cands = sorted(root.glob(f"calibObj-{run:06d}-{camcol}-*.fits*"))
    return paths, (cands[0] if cands else None)


def _background(img: np.ndarray, x: float, y: float, r_in: float, r_out: float) -> float:
    yy, xx = np.indices(img.shape)
    rr = np.hypot(xx - x, yy - y)
    ring = img[(rr >= r_in) & (rr <= r_out)]
    if ring.size < 10:
        return 0.0
    _, med, _ = sigma_clipped_stats(ring, sigma=3.0, maxiters=5)
    return float(med)


def centroid(img: np.ndarray, x: float, y: float, box: int = 9) -> tuple[float, float]:
    """2-D Gaussian centroid of ``img`` in a ``box`` around ``(x, y)`` (0-based, local sky removed)."""
    h = box // 2
    if not (np.isfinite(x) and np.isfinite(y)):
        return np.nan, np.nan
    xi, yi = round(x), round(y)
    ny, nx = img.shape
    if xi - h < 0 or yi - h < 0 or xi + h + 1 > nx or yi + h + 1 > ny:
        return np.nan, np.nan
    sub = img[yi - h:yi + h + 1, xi - h:xi + h + 1].astype(float)
    sub = sub - _background(img, x, y, 12.0, 20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cx, cy = centroid_2dg(sub)
    if not (np.isfinite(cx) and np.isfinite(cy)) or abs(cx - h) > h or abs(cy - h) > h:
        return np.nan, np.nan
    return xi - h + float(cx), yi - h + float(cy)


def measure_alignment(images: np.ndarray, stars: pd.DataFrame, *, min_snr: float = 50.0, box: int = 9,
                      size: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Signed median centroid offset of each band relative to r (see module docstring).

    Parameters
    ----------
    images : numpy.ndarray
        ``[N, 5, n, n]`` aligned cutouts.
    stars : pandas.DataFrame
        Accepted rows with ``star_id``, ``x_r``, ``y_r``, ``snr_r``.

    Returns
    -------
    summary, per_star : pandas.DataFrame
    """
    size = size or images.shape[-1]
    rows = []
    for i, st in enumerate(stars.itertuples()):
        if not st.snr_r > min_snr:
            continue
        x0, y0 = crop_origin(st.x_r, size), crop_origin(st.y_r, size)
        xc, yc = st.x_r - x0, st.y_r - y0  # catalogue position on the r grid
        xr, yr = centroid(images[i, 2], xc, yc, box)
        if not (np.isfinite(xr) and np.isfinite(yr)):
            continue  # no usable r centroid: nothing to measure the other bands against
        for k, b in enumerate(sdss.BANDS):
            if b == "r":
                dx, dy = xr - xc, yr - yc
            else:
                xb, yb = centroid(images[i, k], xr, yr, box)
                dx, dy = xb - xr, yb - yr
            rows.append({"star_id": st.star_id, "band": b, "dx": dx, "dy": dy, "snr_r": st.snr_r})
    per = pd.DataFrame(rows, columns=["star_id", "band", "dx", "dy", "snr_r"])
    summ = []
    for b in sdss.BANDS:
        sel = per[(per["band"] == b) & np.isfinite(per["dx"]) & np.isfinite(per["dy"])]
        summ.append({"band": b, "n": len(sel), "dx_median": float(np.median(sel["dx"])) if len(sel) else np.nan,
                     "dy_median": float(np.median(sel["dy"])) if len(sel) else np.nan})
    return pd.DataFrame(summ), per


def aperture_photometry(images: np.ndarray, stars: pd.DataFrame, radii, *, sky_annulus=(20.0, 23.0)) -> np.ndarray:
    """Background-subtracted aperture fluxes ``[N, 5, len(radii)]`` at each star's catalogue position."""
    size = images.shape[-1]
    out = np.full((len(stars), images.shape[1], len(radii)), np.nan)
    for i, st in enumerate(stars.itertuples()):
        xc = st.x_r - crop_origin(st.x_r, size)
        yc = st.y_r - crop_origin(st.y_r, size)
        for k in range(images.shape[1]):
            img = images[i, k].astype(float)
            bkg = _background(img, xc, yc, *sky_annulus)
            for j, r in enumerate(radii):
                out[i, k, j] = aperture_sum(img - bkg, xc, yc, r)[0]
    return out


def aperture_correction(images: np.ndarray, stars: pd.DataFrame, *, r_ap: float = 4.0, n_stars: int = 4,
                        min_snr: float = 100.0, ref_radius_px: float | None = None) -> pd.DataFrame:
    """Aperture correction per band from the curve of growth of the field's brightest stars.

    Parameters
    ----------
    images, stars
        Accepted (isolated, unsaturated) cutouts and their rows (``x_r``, ``y_r``, ``snr_r``).
    r_ap : float
        Measuring aperture radius (pixels).
    n_stars : int
        The ``n_stars`` highest-SNR stars are used: in the large aperture, faint neighbours and
        sky errors matter least for them.
    min_snr : float
        Lowest r-band SNR of a curve-of-growth star.
    ref_radius_px : float, optional
        Radius the correction extrapolates to; default 7.43 arcsec, the aperture SDSS PSF
        fluxes are normalised to.

    Returns
    -------
    pandas.DataFrame
        ``band, aperture_correction, n_apcor, ref_radius_px``: the median over the stars of
        flux(ref) / flux(r_ap).
    """
    ref = ref_radius_px or SDSS_PSF_NORM_RADIUS_ARCSEC / sdss.PIXEL_SCALE_ARCSEC
    stars = stars.reset_index(drop=True)
    snr = stars["snr_r"].to_numpy(float)
    use = np.zeros(len(stars), bool)
    use[np.argsort(-snr)[:n_stars]] = True
    use &= snr > min_snr
    fl = aperture_photometry(images[use], stars[use], [r_ap, ref])
    rows = []
    for k, b in enumerate(sdss.BANDS):
        ratio = fl[:, k, 1] / fl[:, k, 0]
        ok = np.isfinite(ratio) & (fl[:, k, 0] > 0)
        rows.append({"band": b, "aperture_correction": float(np.median(ratio[ok])) if ok.any() else np.nan,
                     "n_apcor": int(ok.sum()), "ref_radius_px": ref})
    return pd.DataFrame(rows)


def measure_photometry(images: np.ndarray, stars: pd.DataFrame, catalogue: pd.DataFrame, apcor: pd.DataFrame, *,
                       r_ap: float = 4.0, mag_range=(15.0, 19.0)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Aperture photometry times a measured aperture correction against catalogue PSFFLUX.

    Parameters
    ----------
    images, stars
        Accepted cutouts and their rows (``star_id``, ``x_r``, ``y_r``).
    catalogue : pandas.DataFrame
        :func:`load_calibobj` rows; joined on ``star_id`` (= objID as text).
    apcor : pandas.DataFrame
        From :func:`aperture_correction` (same ``r_ap``).
    mag_range : (float, float)
        Catalogue r-band PSF magnitude range of the compared stars.

    Returns
    -------
    summary, per_star : pandas.DataFrame
        dmag = measured - catalogue magnitude; no zero point is fitted.
    """
    cat = catalogue.assign(star_id=catalogue["obj_id"].astype(str)).set_index("star_id")
    stars = stars.reset_index(drop=True)
    ids = stars["star_id"].astype(str)
    fl = aperture_photometry(images, stars, [r_ap])[:, :, 0]
    rmag = cat.loc[ids, "psfmag_r"].to_numpy(float)
    target = (rmag > mag_range[0]) & (rmag < mag_range[1])
    ac = apcor.set_index("band")
    summ, rows = [], []
    for k, b in enumerate(sdss.BANDS):
        a = float(ac.loc[b, "aperture_correction"])
        cat_flux = cat.loc[ids, f"psfflux_{b}"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            dmag = -2.5 * np.log10(fl[:, k] * a / cat_flux)
        sel = target & np.isfinite(dmag)
        for i in np.flatnonzero(sel):
            rows.append({"star_id": ids.iloc[i], "band": b, "psfmag_r": rmag[i], "dmag": dmag[i]})
        summ.append({"band": b, "n": int(sel.sum()), "aperture_correction": a, "n_apcor": int(ac.loc[b, "n_apcor"]),
                     "median_dmag": float(np.median(dmag[sel])) if sel.any() else np.nan,
                     "median_abs_dmag": float(np.median(np.abs(dmag[sel]))) if sel.any() else np.nan})
    return pd.DataFrame(summ), pd.DataFrame(rows, columns=["star_id", "band", "psfmag_r", "dmag"])


def check_field(field_dir=FIXTURE_DIR, *, run: int = 4510, camcol: int = 4, field: int = 30,
                calibobj=None, config: CutoutConfig | None = None, cut_flags: int = sdss.PAPER_CUT_FLAGS,
                min_snr: float = 50.0, r_ap: float = 4.0, mag_range=(15.0, 19.0)) -> RealCheck:
    """Run the label-free pipeline on one real field and measure alignment and photometry.

    Parameters
    ----------
    field_dir : path-like
        Directory with the five frames (SAS layout below it, or flat) and the calibObj file;
        default: the cropped fixture in ``tests/data/sdss_4510_4_30``.
    calibobj : path-like, optional
        The calibObj star file (default: the one found in ``field_dir``).
    config : CutoutConfig, optional
        Cutout thresholds (default: the pipeline defaults).
    cut_flags : int
        photoObj flag bits cut in any band (default: the paper's Appendix-D bits).

    Returns
    -------
    RealCheck
    """
    paths, found = locate_field(field_dir, run, camcol, field)
    calibobj = Path(calibobj) if calibobj else found
    if calibobj is None:
        raise FileNotFoundError(f"{field_dir}: no calibObj-{run:06d}-{camcol}-*.fits* catalogue found")
    cat = load_calibobj(calibobj, field=field)
    cross = calibobj_to_crossmatch(cat)
    sel = catalog.select_stars(cross, None, cut_flags=cut_flags)
    frames = {b: read_frame(p) for b, p in paths.items()}
    res: CutoutResult = cut_field(frames, sel.stars, config)
    funnel = list(sel.funnel) + [("cutouts accepted", len(res.stars))]
    align, per_a = measure_alignment(res.images, res.stars, min_snr=min_snr)
    # The aperture correction is a property of the frame's PSF: it comes from the brightest
    # isolated, unsaturated stars of the field (cutout rules applied, SATURATED cut only),
    # whatever flag cut selects the stars under test.
    bright = catalog.select_stars(cross, None, cut_flags=sdss.FLAG_SATURATED)
    res_ac = cut_field(frames, bright.stars, config)
    apcor = aperture_correction(res_ac.images, res_ac.stars, r_ap=r_ap)
    phot, per_p = measure_photometry(res.images, res.stars, cat, apcor, r_ap=r_ap, mag_range=mag_range)
    per = per_a.merge(per_p, on=["star_id", "band"], how="outer")
    rejects = pd.concat([sel.rejects, res.rejects], ignore_index=True)
    return RealCheck(alignment=align, photometry=phot, per_star=per, funnel=funnel, rejects=rejects,
                     extras={"n_catalogue": len(cat), "frame_shape": list(frames["r"].image.shape)})


def main(argv=None) -> None:
    """``python -m stellarexp.data.realcheck [FIELD_DIR] [--flags paper|saturated]``: print the numbers."""
    ap = argparse.ArgumentParser(description="alignment and photometry of the cutout step on a real SDSS field")
    ap.add_argument("field_dir", nargs="?", default=str(FIXTURE_DIR))
    ap.add_argument("--flags", choices=("paper", "saturated"), default="paper",
                    help="catalogue flag cut: the paper's three bits, or SATURATED only")
    args = ap.parse_args(argv)
    flags = sdss.PAPER_CUT_FLAGS if args.flags == "paper" else sdss.FLAG_SATURATED
    out = check_field(args.field_dir, cut_flags=flags)
    print(json.dumps(out.summary()))


if __name__ == "__main__":
    main()
