"""Guards against realism bought with noise: photometric errors and label noise.

Photometric errors: per band, the median PSF-magnitude error in magnitude bins of the survey's
catalogue against the calibObj one, in the bins both cover. Label noise: the scatter of the
survey's measured labels around their truth, which must not exceed today's levels (the label
file carries no error columns to compare with).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stellarexp import sdss
from stellarexp.survey.realism.checks import Check

ERROR_TOLERANCE = 0.30
CURVE_BIN_MAG = 0.25
CURVE_MIN_STARS = 5
# twin comparison: bins where calibObj's median error is at most this (S/N >= 5, detected stars)
TWIN_MAX_ERROR = 0.2
# the PSF's effective pixels per FWHM^2 of a Gaussian (the least of seeing-limited PSFs)
GAUSSIAN_NOISE_PIXELS = 4.0 * np.pi / (8.0 * np.log(2.0))
# Today's label-noise levels (K, dex, dex): the survey's APOGEE-like errors must not grow.
LABEL_NOISE_LIMITS: dict[str, float] = {"teff": 111.0, "logg": 0.106, "fe_h": 0.054}
LABEL_NOISE_LIMIT_STARS = 598  # the validation stars the limits were measured on (2026-12-01)


def common_range(a, b, q: float = 1.0) -> tuple[float, float]:
    """The magnitude range both samples cover: from the larger of their ``q``-th percentiles to
    the smaller of their ``100 - q``-th."""
    return (float(max(np.nanpercentile(a, q), np.nanpercentile(b, q))),
            float(min(np.nanpercentile(a, 100 - q), np.nanpercentile(b, 100 - q))))


def error_curve(mag, mag_err, *, width: float = CURVE_BIN_MAG,
                min_stars: int = CURVE_MIN_STARS) -> tuple[np.ndarray, np.ndarray]:
    """Median magnitude error in magnitude bins: the catalogue's error curve.

    Parameters
    ----------
    mag, mag_err : array_like
        Magnitudes and their 1-sigma errors.
    width : float
        Bin width (mag).
    min_stars : int
        Bins with fewer finite stars are left out.

    Returns
    -------
    centres, median_err : numpy.ndarray
        Bin centres (mag) and median errors (mag), bins with data only.
    """
    mag, err = np.asarray(mag, float), np.asarray(mag_err, float)
    ok = np.isfinite(mag) & np.isfinite(err) & (err > 0)
    mag, err = mag[ok], err[ok]
    if mag.size == 0:
        return np.array([]), np.array([])
    edges = np.arange(np.floor(mag.min() / width) * width, mag.max() + width, width)
    idx = np.digitize(mag, edges) - 1
    centres, medians = [], []
    for k in range(len(edges) - 1):
        sel = idx == k
        if sel.sum() >= min_stars:
            centres.append(0.5 * (edges[k] + edges[k + 1]))
            medians.append(float(np.median(err[sel])))
    return np.array(centres), np.array(medians)


def calibobj_magnitudes(real: pd.DataFrame, band: str) -> tuple[np.ndarray, np.ndarray]:
    """PSF magnitude (Pogson) and its error from calibObj ``psfflux_<b>``, ``psfflux_ivar_<b>``."""
    f = real[f"psfflux_{band}"].to_numpy(float)
    return sdss.nmgy_to_mag(f), sdss.nmgy_ivar_to_mag_err(f, real[f"psfflux_ivar_{band}"].to_numpy(float))


def _ratios(sim: pd.DataFrame, real: pd.DataFrame, max_real_err: float | None) -> pd.DataFrame:
    """Per band and shared 0.25-mag bin: the two median errors and their ratio (sim / real)."""
    rows = []
    for b in sdss.BANDS:
        c_s, e_s = error_curve(sim[f"psfmag_{b}"], sim[f"psfmagerr_{b}"])
        c_r, e_r = error_curve(*calibobj_magnitudes(real, b))
        common, i_s, i_r = np.intersect1d(np.round(c_s, 3), np.round(c_r, 3), return_indices=True)
        if max_real_err is not None:
            keep = e_r[i_r] <= max_real_err
            common, i_s, i_r = common[keep], i_s[keep], i_r[keep]
        if common.size == 0:
            rows.append({"band": b, "mag": np.nan, "err_sim": np.nan, "err_real": np.nan, "ratio": np.nan})
        for m, es, er in zip(common, e_s[i_s], e_r[i_r]):
            rows.append({"band": b, "mag": float(m), "err_sim": float(es), "err_real": float(er),
                         "ratio": float(es / er)})
    return pd.DataFrame(rows)


def _per_band(table: pd.DataFrame) -> pd.DataFrame:
    return table.dropna(subset=["ratio"]).groupby("band").agg(
        lo=("ratio", "min"), hi=("ratio", "max"), m0=("mag", "min"), m1=("mag", "max"), n=("ratio", "size"))


def photometric_errors(sim: pd.DataFrame, real: pd.DataFrame, *, sample: str, twin: pd.DataFrame | None = None,
                       tolerance: float = ERROR_TOLERANCE) -> Check:
    """PSF-magnitude errors against magnitude per band, simulated against calibObj.

    Each catalogue's error curve is the median error in 0.25-mag bins (:func:`error_curve`); in
    every bin both curves cover, the simulated median error is divided by the calibObj one. No
    noise model is fitted, so a floor, sky or source term of either catalogue shows as it is.

    With ``twin`` (the anchor's stars measured by the survey's photometry in the anchor's
    observing conditions, :mod:`stellarexp.survey.realism.twin`) the verdict compares the twin
    with the anchor, star for star the same sample, in bins where the anchor's median error is
    at most ``TWIN_MAX_ERROR`` (S/N >= 5); the survey's own fields, observed in SDSS-wide
    conditions, are reported beside it. Without it the survey's catalogue is judged.

    Parameters
    ----------
    sim : pandas.DataFrame
        Simulated catalogue: ``psfmag_<b>``, ``psfmagerr_<b>``.
    real : pandas.DataFrame
        calibObj stars: ``psfflux_<b>``, ``psfflux_ivar_<b>``.
    twin : pandas.DataFrame, optional
        The twin catalogue (``psfmag_<b>``, ``psfmagerr_<b>``).

    Returns
    -------
    Check
        Value: the judged error ratio (simulated / real) farthest from 1 over bands and bins.
    """
    survey = _ratios(sim, real, None).assign(comparison="survey fields")
    if twin is not None:
        judged_table = _ratios(twin, real, TWIN_MAX_ERROR).assign(comparison="twin, anchor conditions")
        table = pd.concat([judged_table, survey], ignore_index=True)
        what = (f"the survey's photometry in the anchor's conditions (its twin) within +-{tolerance:.0%} of "
                f"calibObj's median PSF-magnitude error per band, in every {CURVE_BIN_MAG}-mag bin with >= "
                f"{CURVE_MIN_STARS} stars and calibObj error <= {TWIN_MAX_ERROR}")
    else:
        judged_table, table = survey, survey
        what = (f"median PSF-magnitude error within +-{tolerance:.0%} of calibObj's per band, in every "
                f"{CURVE_BIN_MAG}-mag bin where both have >= {CURVE_MIN_STARS} stars")
    judged = judged_table.dropna(subset=["ratio"])
    if judged.empty:
        return Check("photometric_errors", sample, float("nan"), what, None,
                     "no magnitude bin with enough stars in both catalogues", table)
    ratios = judged["ratio"].to_numpy(float)
    worst = float(ratios[np.argmax(np.abs(np.log(ratios)))])
    per_band = _per_band(judged)
    within = bool((np.abs(ratios - 1.0) <= tolerance).all())
    # every band judged and within; a band out of tolerance fails even when others were not judged
    passed = (within if len(per_band) == len(sdss.BANDS) else None) if within else False
    detail = "; ".join(f"{b}: x{r.lo:.2f}-{r.hi:.2f} ({int(r.n)} bins, {r.m0:.2f}-{r.m1:.2f})"
                       for b, r in per_band.iterrows())
    unjudged = [b for b in sdss.BANDS if b not in per_band.index]
    if unjudged:
        detail += f"; no common bin: {', '.join(unjudged)}"
    key = "twin_ratio" if twin is not None else "ratio"  # a twin's ratios are not the survey's
    metrics = {f"{key}_{b}_max": float(r.hi) for b, r in per_band.iterrows()}
    metrics.update({f"{key}_{b}_min": float(r.lo) for b, r in per_band.iterrows()})
    if twin is not None:
        own = _per_band(survey)
        detail = (f"twin in the anchor's conditions: {detail}. The survey's own fields (SDSS-wide "
                  "conditions, not judged): " + "; ".join(f"{b} x{r.lo:.2f}-{r.hi:.2f}" for b, r in own.iterrows()))
        metrics.update({f"survey_ratio_{b}_max": float(r.hi) for b, r in own.iterrows()})
    return Check("photometric_errors", sample, worst, what, passed, detail, table, metrics)


def label_noise(stars: pd.DataFrame, *, sample: str, limits: dict | None = None, seed: int = 0,
                n_boot: int = 300) -> Check:
    """Scatter of measured labels around the truth (``<label>`` vs ``<label>_true``).

    The limits are themselves measurements, on ``LABEL_NOISE_LIMIT_STARS`` stars, so a label
    passes when its scatter exceeds the limit by less than two standard errors of the difference
    of the two measurements: the scatter's (bootstrap) and the limit's (``limit / sqrt(2 n)``, a
    Gaussian scatter's standard error for n stars) added in quadrature.

    Returns
    -------
    Check
        Value: the largest scatter / limit over the labels.
    """
    limits = dict(limits or LABEL_NOISE_LIMITS)
    rng = np.random.default_rng(seed)
    rows = []
    for lab, limit in limits.items():
        if lab not in stars or f"{lab}_true" not in stars:
            continue
        d = stars[lab].to_numpy(float) - stars[f"{lab}_true"].to_numpy(float)
        d = d[np.isfinite(d)]
        se = float(np.std([np.std(rng.choice(d, d.size)) for _ in range(n_boot)])) if d.size > 1 else np.nan
        rows.append({"label": lab, "n": d.size, "sigma": float(np.std(d)) if d.size else np.nan,
                     "se": se, "limit": limit})
    table = pd.DataFrame(rows)
    target = ("label noise <= " + " / ".join(f"{v:g}" for v in limits.values())
              + f" (Teff K, logg, [Fe/H] dex, measured on {LABEL_NOISE_LIMIT_STARS} stars; within 2 "
              "standard errors of the difference)")
    if table.empty or not (table["n"] > 1).all():
        return Check("label_noise", sample, float("nan"), target, None, "no true labels in the sample", table)
    table["fraction"] = table["sigma"] / table["limit"]
    table["se_limit"] = table["limit"] / np.sqrt(2.0 * LABEL_NOISE_LIMIT_STARS)
    allowed = 2.0 * np.hypot(table["se"], table["se_limit"])
    passed = bool((table["sigma"] <= table["limit"] + allowed).all())
    detail = ", ".join(f"{r.label} {r.sigma:.3g} +- {r.se:.2g}" for r in table.itertuples()) + f" ({int(table['n'].min())} stars)"
    metrics = {f"sigma_{r.label}": float(r.sigma) for r in table.itertuples()}
    return Check("label_noise", sample, float(table["fraction"].max()), target, passed, detail, table, metrics)


def implied_noise_pixels(real: pd.DataFrame, band: str, camcol: int, *, dark_variance: bool,
                         snr: tuple[float, float] = (3.0, 12.0)) -> float:
    """The PSF's effective number of pixels, in units of FWHM^2 (pixels), that calibObj's
    reported errors imply for faint stars.

    A PSF fit's flux variance is ``n_eff`` times the per-pixel variance plus the source's
    Poisson term, so ``n_eff = (err_dn^2 - flux_dn / gain) / (sky_dn / gain [+ darkVariance])``
    per star (``psfflux``, ``psfflux_ivar``, ``skyflux``, ``nmgypercount``, ``psf_fwhm``
    columns). A seeing-limited PSF has ``n_eff / FWHM^2`` at least that of a Gaussian
    (:data:`GAUSSIAN_NOISE_PIXELS`, 2.27; Moffat profiles with beta 3-4.8 give 3.0-3.8), so a value
    below it says the errors were computed from less variance than assumed.

    Returns
    -------
    float
        The median over stars with ``snr[0] < S/N < snr[1]``.
    """
    f = real[f"psfflux_{band}"].to_numpy(float)
    ivar = real[f"psfflux_ivar_{band}"].to_numpy(float)
    nmgy = real[f"nmgypercount_{band}"].to_numpy(float)
    sky_dn = real[f"skyflux_{band}"].to_numpy(float) * sdss.PIXEL_SCALE_ARCSEC**2 / nmgy
    fwhm_px = real[f"psf_fwhm_{band}"].to_numpy(float) / sdss.PIXEL_SCALE_ARCSEC
    gain = sdss.gain(band, camcol)
    with np.errstate(divide="ignore", invalid="ignore"):
        err_dn = 1.0 / np.sqrt(ivar) / nmgy
        s_n = f * np.sqrt(ivar)
    pixel_var = sky_dn / gain + (sdss.dark_variance(band, camcol) if dark_variance else 0.0)
    n_eff = (err_dn**2 - f / nmgy / gain) / pixel_var
    keep = (s_n > snr[0]) & (s_n < snr[1]) & np.isfinite(n_eff)
    return float(np.median(n_eff[keep] / fwhm_px[keep] ** 2))
