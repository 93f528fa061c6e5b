"""The per-star pixel checks of the cutout step (reasons ``position_offset``,
``saturated_core`` and ``contaminated``; order and thresholds in :mod:`stellarexp.data.cutouts`).

Each check looks at one band of one star and returns ``(reason, detail)`` (or a detail string
for the contamination rule), or None when the star passes.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from stellarexp import sdss
from stellarexp.sdss.frames import Frame

if TYPE_CHECKING:
    from stellarexp.data.cutouts import CutoutConfig


def sigma_cut(frame: Frame, data: np.ndarray, sl) -> np.ndarray:
    """Noise (nanomaggies) of a sub-image ``data = frame.image[sl]`` from the frame's noise model."""
    calib = frame.calib[sl[1]][None, :]
    dn = np.clip(data / calib + frame.sky[sl], 0.0, None)
    return np.sqrt(dn / frame.gain + frame.dark_variance) * calib


def core_check(frame: Frame, data: np.ndarray, sl, x: float, y: float,
                cfg: CutoutConfig) -> tuple[str, str] | None:
    """Saturation and position tests on original pixels of one band: ``(reason, detail)`` or None."""
    calib = frame.calib[sl[1]][None, :]
    ny, nx = data.shape
    r = cfg.core_radius_px
    ya, yb = max(0, int(np.floor(y - r))), min(ny, int(np.ceil(y + r)) + 1)
    xa, xb = max(0, int(np.floor(x - r))), min(nx, int(np.ceil(x + r)) + 1)
    if ya >= yb or xa >= xb:
        return None
    yy, xx = np.mgrid[ya:yb, xa:xb]
    inside = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
    core = data[ya:yb, xa:xb]
    sub_sl = (slice(sl[0].start + ya, sl[0].start + yb), slice(sl[1].start + xa, sl[1].start + xb))
    counts = core / calib[:, xa:xb] + frame.sky[sub_sl]
    ceiling = cfg.saturation_fraction * (sdss.SATURATION_DN - sdss.SOFTBIAS)
    if np.any(counts[inside] >= ceiling):
        return "saturated_core", f"{frame.band}: core pixel at {np.max(counts[inside]):.0f} DN >= {ceiling:.0f}"
    vals = np.where(inside, core, -np.inf)
    k = np.argmax(vals)
    peak = vals.flat[k]
    sig = sigma_cut(frame, core, sub_sl).flat[k]
    if not np.isfinite(peak) or peak <= cfg.peak_min_snr * sig:
        return None
    off = np.hypot(xx.flat[k] - x, yy.flat[k] - y)
    if off > cfg.max_peak_offset_px:
        return "saturated_core", f"{frame.band}: brightest core pixel {off:.1f} px from the star (interpolated/deformed core)"
    ntop = int(np.sum(core[inside] >= 0.9 * peak))
    if ntop > cfg.flat_top_pixels:
        return "saturated_core", f"{frame.band}: {ntop} core pixels within 10% of the peak (flat top)"
    return None


def position_check(frame: Frame, data: np.ndarray, sl, x: float, y: float,
                    cfg: CutoutConfig) -> tuple[str, str] | None:
    """``("position_offset", detail)`` when the star's light sits beside its catalogue position.

    The test: within three core radii, the brightest pixel is a significant peak (above
    ``peak_min_snr`` noise) outside the core, and the core's own brightest pixel is off-centre
    too (so no star sits at the position: a neighbour beside a centred star is left to the
    contamination rule). A saturated core keeps its light centred on the star.
    """
    r_out, r_core = 3.0 * cfg.core_radius_px, cfg.core_radius_px
    ny, nx = data.shape
    ya, yb = max(0, int(np.floor(y - r_out))), min(ny, int(np.ceil(y + r_out)) + 1)
    xa, xb = max(0, int(np.floor(x - r_out))), min(nx, int(np.ceil(x + r_out)) + 1)
    if ya >= yb or xa >= xb:
        return None
    box = data[ya:yb, xa:xb]
    yy, xx = np.mgrid[ya:yb, xa:xb]
    rr = np.hypot(xx - x, yy - y)
    vals = np.where(np.isfinite(box) & (rr <= r_out), box, -np.inf)
    k = int(np.argmax(vals))
    core = np.where(rr <= r_core, vals, -np.inf)
    kc = int(np.argmax(core))
    if rr.flat[k] <= r_core or rr.flat[kc] <= cfg.max_peak_offset_px:
        return None
    sub_sl = (slice(sl[0].start + ya, sl[0].start + yb), slice(sl[1].start + xa, sl[1].start + xb))
    if vals.flat[k] <= cfg.peak_min_snr * sigma_cut(frame, box, sub_sl).flat[k]:
        return None
    dx, dy = float(xx.flat[k] - x), float(yy.flat[k] - y)
    d = float(np.hypot(dx, dy))
    return "position_offset", (f"{frame.band}: the star's light peaks {d:.1f} px ({d * sdss.PIXEL_SCALE_ARCSEC:.1f} "
                               f"arcsec) from its catalogue position, at ({dx:+.1f}, {dy:+.1f}) px: its "
                               "coordinates or the frame's WCS are off")


def neighbour_check(img: np.ndarray, sigma: np.ndarray, x: float, y: float, band: str, cfg: CutoutConfig) -> str | None:
    """Contamination rule on one aligned cutout; returns a detail string or None."""
    from photutils.detection import find_peaks

    yy, xx = np.indices(img.shape)
    rr = np.hypot(xx - x, yy - y)
    core = rr <= cfg.core_radius_px
    target = float(np.max(img[core]))
    if not np.isfinite(target) or target <= 0:
        return None
    noise = float(np.median(sigma))
    thresh = max(cfg.contamination_nsigma * noise, cfg.contamination_fraction * target)
    if not np.any(img[~core] > thresh):
        return None  # a far peak must itself exceed the threshold: skip the (slower) peak finder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NoDetectionsWarning is the common, good case
        peaks = find_peaks(img, thresh, box_size=cfg.contamination_box)
    if peaks is None:
        return None
    px, py, pv = (np.asarray(peaks[c], float) for c in ("x_peak", "y_peak", "peak_value"))
    far = np.hypot(px - x, py - y) > cfg.core_radius_px
    if not far.any():
        return None
    j = np.flatnonzero(far)[np.argmax(pv[far])]
    return (f"{band}: neighbour peak at ({px[j] - x:+.0f}, {py[j] - y:+.0f}) px with "
            f"{pv[j] / target:.2f} of the star's peak")
