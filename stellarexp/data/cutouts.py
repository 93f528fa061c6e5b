"""Aligned 48x48 five-band cutouts on each star's own r-band pixel grid, with reject rules.

For every star the r band is cut at integer pixels from the r frame (never resampled); u, g, i
and z are reprojected onto that cutout's WCS with the ``reproject`` package from a small margin
cut-out of their own frame (:class:`astropy.nddata.Cutout2D`), never from whole frames. A
field's five frames are read once and shared by all its stars.

Reject reasons, checked in this order (first failure wins; thresholds in :class:`CutoutConfig`,
rationale in ``docs/pipeline.md``):

``missing_frame`` / ``bad_frame``
    a frame of the field cannot be read (:class:`~stellarexp.sdss.frames.FrameError`).
``off_frame``
    the star's position is outside the r frame.
``too_near_edge``
    the 48x48 r crop, or the margin cut-out of another band, does not fit in its frame.
``broken_band``
    a band is missing from the field, or its frame/cutout is all zero or constant.
``non_finite``
    a NaN/inf pixel in any band's cutout.
``position_offset``
    in any band, the brightest pixel within three core radii is a significant peak outside the
    core while the core's own brightest pixel is off-centre: the catalogue position (or that
    band's WCS) is off; the detail gives the offset.
``saturated_core``
    in any band, a core pixel at >= ``saturation_fraction`` of the ADC ceiling (in DN incl. sky),
    or a deformed core: the brightest core pixel lies more than ``max_peak_offset_px`` from the
    star, or more than ``flat_top_pixels`` core pixels sit within 10 % of the peak (SDSS
    interpolates over saturated pixels, so real saturated cores are not at the ceiling).
``too_faint``
    r-band aperture SNR below ``min_snr``.
``contaminated``
    a local peak in a ``contamination_bands`` cutout, outside ``core_radius_px`` of the star,
    above ``contamination_nsigma`` noise and above ``contamination_fraction`` of the star's peak.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stellarexp import sdss
from stellarexp.data.cutout_checks import core_check, neighbour_check, position_check, sigma_cut
from stellarexp.sdss.frames import Frame, FrameError, read_frame

REJECT_COLUMNS = ["star_id", "reason", "detail"]


@dataclass
class CutoutConfig:
    """Thresholds of the cutout step (Hydra's ``data.cutouts`` maps onto these fields).

    Attributes
    ----------
    size : int
        Cutout side in pixels (48 in the paper).
    method : str
        ``interp`` (default, fastest), ``adaptive`` or ``exact`` (reproject functions).
    order : str
        Interpolation order for ``interp`` (``bilinear``, ``bicubic``, ...).
    margin_px : int
        Extra pixels around the reprojected footprint in the source band's margin cut-out.
    core_radius_px : float
        Radius of the star's core (saturation test; neighbours inside it count as the star).
    saturation_fraction : float
        Fraction of the ADC ceiling (``SATURATION_DN - SOFTBIAS`` DN) flagged as saturated.
    max_peak_offset_px : float
        Largest distance of the brightest core pixel from the star before the core counts as
        deformed (interpolated over saturation); only tested when the peak is significant.
    flat_top_pixels : int
        More core pixels than this within 10 % of the peak means a clipped (flat) top.
    peak_min_snr : float
        Pixel SNR of the peak above which the core-shape tests apply.
    snr_aperture_px : float
        Aperture radius of the r-band SNR.
    min_snr : float
        Lowest accepted r-band SNR.
    contamination_bands : tuple of str
        Bands searched for neighbours.
    contamination_fraction : float
        A neighbour peak above this fraction of the star's peak contaminates.
    contamination_nsigma : float
        A neighbour peak must also exceed this many noise sigma.
    contamination_box : int
        ``box_size`` of :func:`photutils.detection.find_peaks`.
    roundtrip_coords : bool
        Passed to reproject; the round-trip validity check doubles the cost and is not needed
        for TAN frames of one field.
    """

    size: int = 48
    method: str = "interp"
    order: str = "bilinear"
    margin_px: int = 4
    core_radius_px: float = 3.0
    saturation_fraction: float = 0.9
    max_peak_offset_px: float = 1.5
    flat_top_pixels: int = 6
    peak_min_snr: float = 20.0
    snr_aperture_px: float = 5.0
    min_snr: float = 10.0
    contamination_bands: tuple = ("g", "r", "i")
    contamination_fraction: float = 0.1
    contamination_nsigma: float = 5.0
    contamination_box: int = 5
    roundtrip_coords: bool = False

    def __post_init__(self):
        self.contamination_bands = tuple(self.contamination_bands)
        if self.method not in ("interp", "adaptive", "exact"):
            raise ValueError(f"cutouts.method must be interp, adaptive or exact, got {self.method!r}")
        if self.size < 8:
            raise ValueError(f"cutouts.size must be >= 8, got {self.size}")
        bad = set(self.contamination_bands) - set(sdss.BANDS)
        if bad:
            raise ValueError(f"cutouts.contamination_bands has unknown bands {sorted(bad)}")


@dataclass
class CutoutResult:
    """Accepted cutouts and the rejects of one call.

    Attributes
    ----------
    images : numpy.ndarray
        float32 ``[N, 5, size, size]`` in nanomaggies, bands u g r i z on each star's r grid.
    stars : pandas.DataFrame
        The accepted input rows (same order as ``images``) plus ``x_r``, ``y_r`` (0-based star
        position in the r frame) and ``snr_r``.
    rejects : pandas.DataFrame
        ``star_id``, ``reason``, ``detail`` of every rejected star.
    wcs : list
        The r-grid WCS of each accepted cutout (not stored in the dataset).
    timings : dict
        Seconds spent reading frames and cutting.
    """

    images: np.ndarray
    stars: pd.DataFrame
    rejects: pd.DataFrame
    wcs: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def _reproject_fn(cfg: CutoutConfig):
    import reproject

    if cfg.method == "interp":
        return lambda inp, wcs, shape: reproject.reproject_interp(
            inp, wcs, shape_out=shape, order=cfg.order, return_footprint=False, roundtrip_coords=cfg.roundtrip_coords)
    if cfg.method == "adaptive":
        return lambda inp, wcs, shape: reproject.reproject_adaptive(
            inp, wcs, shape_out=shape, return_footprint=False, roundtrip_coords=cfg.roundtrip_coords)
    return lambda inp, wcs, shape: reproject.reproject_exact(inp, wcs, shape_out=shape, return_footprint=False)


def aperture_sum(image: np.ndarray, x: float, y: float, radius: float, variance: np.ndarray | None = None):
    """Exact-overlap circular aperture sum (and its variance) at 0-based ``(x, y)``."""
    from photutils.aperture import CircularAperture

    mask = CircularAperture((x, y), r=radius).to_mask(method="exact")
    w = mask.to_image(image.shape)
    if w is None:
        return np.nan, np.nan
    flux = float(np.sum(w * image))
    var = float(np.sum(w * w * variance)) if variance is not None else np.nan
    return flux, var


def crop_origin(pos: float, size: int) -> int:
    """First pixel of a ``size``-pixel crop centred on 0-based ``pos`` (star within +-0.5 px of the centre)."""
    return int(np.floor(pos - (size - 1) / 2.0 + 0.5))


def cut_field(frames: dict, stars: pd.DataFrame, config: CutoutConfig | None = None) -> CutoutResult:
    """Cut aligned cutouts for the stars of one field whose frames are already in memory.

    Parameters
    ----------
    frames : dict of str to Frame
        Band -> frame of one field (a missing band rejects every star as ``broken_band``).
    stars : pandas.DataFrame
        Needs ``star_id``, ``ra``, ``dec`` (deg).
    config : CutoutConfig, optional

    Returns
    -------
    CutoutResult
    """
    cfg = config or CutoutConfig()
    t0 = time.perf_counter()
    n = cfg.size
    half = (n - 1) / 2.0
    stars = stars.reset_index(drop=True)
    rejects: list[tuple[str, str, str]] = []
    images, keep, wcs_list, xr, yr, snr = [], [], [], [], [], []
    ids = stars["star_id"].astype(str).to_numpy()
    missing = [b for b in sdss.BANDS if b not in frames or frames[b] is None]
    if sdss.REFERENCE_BAND in missing or len(stars) == 0:
        for sid in ids:
            rejects.append((sid, "broken_band", f"band(s) {','.join(missing)} missing for this field"))
        return _result(stars, [], [], [], [], [], [], rejects, cfg, t0)
    broken = {}
    for b in sdss.BANDS:
        if b in missing:
            broken[b] = "missing for this field"
        elif not np.any(frames[b].image) or np.ptp(frames[b].image) == 0:
            broken[b] = f"frame {frames[b].path.name} is all zero/constant"
    fr = frames[sdss.REFERENCE_BAND]
    ny_r, nx_r = fr.image.shape
    ra, dec = stars["ra"].to_numpy(float), stars["dec"].to_numpy(float)
    x_all, y_all = fr.wcs.all_world2pix(ra, dec, 0)
    band_xy = {b: frames[b].wcs.all_world2pix(ra, dec, 0) for b in sdss.BANDS if b not in broken}
    project = _reproject_fn(cfg)
    corners = np.array([[-0.5, -0.5], [n - 0.5, -0.5], [-0.5, n - 0.5], [n - 0.5, n - 0.5], [half, half]])
    from astropy.nddata import Cutout2D
    from astropy.nddata.utils import NoOverlapError, PartialOverlapError

    for i, sid in enumerate(ids):
        x, y = float(x_all[i]), float(y_all[i])
        if not (np.isfinite(x) and np.isfinite(y)) or not (-0.5 <= x < nx_r - 0.5 and -0.5 <= y < ny_r - 0.5):
            rejects.append((sid, "off_frame", f"r position ({x:.1f}, {y:.1f}) outside the {nx_r}x{ny_r} r frame"))
            continue
        x0, y0 = crop_origin(x, n), crop_origin(y, n)
        if x0 < 0 or y0 < 0 or x0 + n > nx_r or y0 + n > ny_r:
            rejects.append((sid, "too_near_edge", f"r: {n}x{n} crop at ({x0}, {y0}) leaves the r frame"))
            continue
        if broken:
            b = next(iter(broken))
            rejects.append((sid, "broken_band", f"{b}: {broken[b]}"))
            continue
        sl_r = (slice(y0, y0 + n), slice(x0, x0 + n))
        wcs_r = fr.wcs[sl_r]
        cube = np.empty((len(sdss.BANDS), n, n), dtype=np.float32)
        reason = None
        world = wcs_r.all_pix2world(corners, 0)
        sat_inputs = {}
        for k, b in enumerate(sdss.BANDS):
            frame = frames[b]
            if b == sdss.REFERENCE_BAND:
                cube[k] = fr.image[sl_r]
                sat_inputs[b] = (frame, fr.image[sl_r], sl_r, x - x0, y - y0)
                continue
            pix = frame.wcs.all_world2pix(world, 0)
            bx0 = int(np.floor(pix[:4, 0].min())) - cfg.margin_px
            bx1 = int(np.ceil(pix[:4, 0].max())) + cfg.margin_px + 1
            by0 = int(np.floor(pix[:4, 1].min())) - cfg.margin_px
            by1 = int(np.ceil(pix[:4, 1].max())) + cfg.margin_px + 1
            try:
                cut = Cutout2D(frame.image, ((bx0 + bx1 - 1) / 2.0, (by0 + by1 - 1) / 2.0), (by1 - by0, bx1 - bx0),
                               wcs=frame.wcs, mode="strict", copy=False)
            except (NoOverlapError, PartialOverlapError, ValueError):
                reason = ("too_near_edge", f"{b}: margin cut-out [{bx0}:{bx1}, {by0}:{by1}] leaves the {b} frame")
                break
            cube[k] = project((cut.data, cut.wcs), wcs_r, (n, n))
            bx, by = band_xy[b][0][i], band_xy[b][1][i]
            sat_inputs[b] = (frame, cut.data, cut.slices_original, bx - cut.origin_original[0],
                             by - cut.origin_original[1])
        if reason is None:
            finite = np.isfinite(cube)
            if not finite.all():
                bad = [b for k, b in enumerate(sdss.BANDS) if not finite[k].all()]
                reason = ("non_finite", f"{','.join(bad)}: {int((~finite).sum())} non-finite pixels")
        if reason is None:
            flat = [b for k, b in enumerate(sdss.BANDS) if np.ptp(cube[k]) == 0]
            if flat:
                reason = ("broken_band", f"{','.join(flat)}: cutout is constant (value {cube[sdss.BANDS.index(flat[0])].flat[0]:g})")
        if reason is None:
            for check in (position_check, core_check):
                for b in sdss.BANDS:
                    reason = check(*sat_inputs[b], cfg)
                    if reason:
                        break
                if reason:
                    break
        if reason is None:
            sig_r = sigma_cut(fr, cube[2], sl_r)
            flux, var = aperture_sum(cube[2], x - x0, y - y0, cfg.snr_aperture_px, sig_r ** 2)
            s = flux / np.sqrt(var) if var > 0 else np.nan
            if not np.isfinite(s) or s < cfg.min_snr:
                reason = ("too_faint", f"r SNR {s:.1f} < {cfg.min_snr:g} (aperture {cfg.snr_aperture_px:g} px)")
        if reason is None:
            for b in cfg.contamination_bands:
                k = sdss.BANDS.index(b)
                sig = sig_r if b == sdss.REFERENCE_BAND else np.full((n, n), _median_sigma(frames[b], band_xy[b], i))
                detail = neighbour_check(cube[k], sig, x - x0, y - y0, b, cfg)
                if detail:
                    reason = ("contaminated", detail)
                    break
        if reason is not None:
            rejects.append((sid, reason[0], reason[1]))
            continue
        images.append(cube)
        keep.append(i)
        wcs_list.append(wcs_r)
        xr.append(x)
        yr.append(y)
        snr.append(s)
    return _result(stars, images, keep, wcs_list, xr, yr, snr, rejects, cfg, t0)


def _median_sigma(frame: Frame, xy, i: int) -> float:
    """Sky-dominated pixel noise of ``frame`` near star ``i`` (nanomaggies)."""
    x, y = int(np.clip(round(xy[0][i]), 0, frame.image.shape[1] - 1)), int(np.clip(round(xy[1][i]), 0, frame.image.shape[0] - 1))
    dn = max(float(frame.sky[y, x]), 0.0)
    return float(np.sqrt(dn / frame.gain + frame.dark_variance) * frame.calib[x])


def _result(stars, images, keep, wcs_list, xr, yr, snr, rejects, cfg, t0) -> CutoutResult:
    n = cfg.size
    acc = stars.iloc[keep].copy().reset_index(drop=True)
    acc["x_r"] = np.asarray(xr, float)
    acc["y_r"] = np.asarray(yr, float)
    acc["snr_r"] = np.asarray(snr, float)
    imgs = np.stack(images).astype(np.float32) if images else np.zeros((0, len(sdss.BANDS), n, n), np.float32)
    rej = pd.DataFrame(rejects, columns=REJECT_COLUMNS)
    return CutoutResult(images=imgs, stars=acc, rejects=rej, wcs=wcs_list,
                        timings={"cut_s": time.perf_counter() - t0})


def read_field_frames(frame_root, run: int, camcol: int, field: int, bands=sdss.BANDS) -> tuple[dict, list]:
    """Read every band of a field, collecting failures instead of raising.

    Returns
    -------
    frames : dict
        Band -> Frame for the bands that could be read.
    errors : list of (str, str, str)
        ``(band, reason, message)`` with reason ``missing_frame`` or ``bad_frame``.
    """
    root = Path(frame_root)
    frames, errors = {}, []
    for b in bands:
        path = sdss.frame_path(root, b, run, camcol, field)
        if not path.is_file():
            errors.append((b, "missing_frame", f"{path}: frame file not found"))
            continue
        try:
            frames[b] = read_frame(path)
        except FrameError as exc:
            errors.append((b, "bad_frame", str(exc)))
    return frames, errors


def build_cutouts(stars_df: pd.DataFrame, frame_root, config: CutoutConfig | None = None, *,
                  progress: bool = True) -> CutoutResult:
    """Cutouts for every star of a catalogue selection, field by field.

    Parameters
    ----------
    stars_df : pandas.DataFrame
        Needs ``star_id``, ``run``, ``camcol``, ``field``, ``ra``, ``dec``.
    frame_root : path-like
        Root of the SAS layout ``frames/301/{run}/{camcol}/frame-*.fits.bz2``.
    config : CutoutConfig, optional
    progress : bool
        Show a tqdm progress bar over fields.

    Returns
    -------
    CutoutResult
        A field whose frames are missing or unreadable rejects each of its stars with reason
        ``missing_frame`` or ``bad_frame`` naming the file; the build continues.
    """
    cfg = config or CutoutConfig()
    missing_cols = [c for c in ("star_id", "run", "camcol", "field", "ra", "dec") if c not in stars_df]
    if missing_cols:
        raise ValueError(f"stars table lacks column(s) {missing_cols}; present: {list(stars_df.columns)}")
    stars_df = stars_df.reset_index(drop=True)
    groups = stars_df.groupby(["run", "camcol", "field"], sort=True)
    images, accepted, rejects, wcs_list = [], [], [], []
    t_read = t_cut = 0.0
    bar = tqdm(groups, total=groups.ngroups, desc="cutouts (fields)", unit="field", disable=not progress)
    for (run, camcol, fld), group in bar:
        t0 = time.perf_counter()
        frames, errors = read_field_frames(frame_root, int(run), int(camcol), int(fld))
        t_read += time.perf_counter() - t0
        if errors:
            band, reason, msg = errors[0]
            more = f" (+{len(errors) - 1} more band(s))" if len(errors) > 1 else ""
            rejects.append(pd.DataFrame({"star_id": group["star_id"].astype(str).to_numpy(), "reason": reason,
                                         "detail": f"band {band}: {msg}{more}"}))
            continue
        res = cut_field(frames, group, cfg)
        t_cut += res.timings["cut_s"]
        images.append(res.images)
        accepted.append(res.stars)
        rejects.append(res.rejects)
        wcs_list.extend(res.wcs)
        bar.set_postfix(accepted=sum(len(a) for a in accepted), rejected=sum(len(r) for r in rejects))
    n = cfg.size
    imgs = np.concatenate(images) if images else np.zeros((0, len(sdss.BANDS), n, n), np.float32)
    stars = pd.concat(accepted, ignore_index=True) if accepted else stars_df.iloc[:0].assign(x_r=[], y_r=[], snr_r=[])
    rej = pd.concat([r for r in rejects if len(r)], ignore_index=True) if any(len(r) for r in rejects) \
        else pd.DataFrame(columns=REJECT_COLUMNS)
    return CutoutResult(images=imgs, stars=stars, rejects=rej, wcs=wcs_list,
                        timings={"read_s": t_read, "cut_s": t_cut, "n_fields": int(groups.ngroups)})


def config_dict(cfg: CutoutConfig) -> dict:
    """Plain dict of a config (for logging the thresholds with a dataset)."""
    return asdict(cfg)
