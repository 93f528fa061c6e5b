"""Regression metrics of residuals with bootstrap intervals, and their MLflow metric names.

Residuals are ``prediction - label``. The paper's figure of merit is ``sigma``, the standard
deviation of the residuals (numpy's population form, ``ddof=0``). Every metric works along the
last axis, so one call evaluates a whole matrix of bootstrap resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, spearmanr
from sklearn.metrics import accuracy_score, precision_score, recall_score

from stellarexp.constants import INTERVAL_LEVELS, LOGG_THRESHOLD, MAD_TO_SIGMA
from stellarexp.evaluate.calibration import z_value

"""Scale turning a median absolute deviation into a Gaussian sigma."""

METRICS: tuple[str, ...] = ("sigma", "robust_sigma", "mae", "bias", "rmse")

# keep a bootstrap chunk to about this many residual values (memory bound for large samples)
_CHUNK_VALUES = 2_000_000


@dataclass(frozen=True)
class Estimate:
    """A metric value with the bounds of its bootstrap interval."""

    value: float
    lo: float
    hi: float


def _robust_sigma(r: np.ndarray) -> np.ndarray:
    med = np.median(r, axis=-1, keepdims=True)
    return MAD_TO_SIGMA * np.median(np.abs(r - med), axis=-1)


_FUNCS = {
    "sigma": lambda r: np.std(r, axis=-1),
    "robust_sigma": _robust_sigma,
    "mae": lambda r: np.mean(np.abs(r), axis=-1),
    "bias": lambda r: np.mean(r, axis=-1),
    "rmse": lambda r: np.sqrt(np.mean(r * r, axis=-1)),
}


def residual_metrics(residuals) -> dict[str, np.ndarray | float]:
    """Every metric of :data:`METRICS` along the last axis of ``residuals``.

    Parameters
    ----------
    residuals : array_like
        ``prediction - label``; 1-D for one sample, 2-D for a stack of resamples.

    Returns
    -------
    dict
        Metric name -> float (1-D input) or array (one value per row).
    """
    r = np.asarray(residuals, dtype=float)
    if r.shape[-1] == 0:
        raise ValueError("no residuals to evaluate (empty subset)")
    out = {name: fn(r) for name, fn in _FUNCS.items()}
    if r.ndim == 1:
        out = {k: float(v) for k, v in out.items()}
    return out


def bootstrap_intervals(residuals, *, n_boot: int = 1000, level: float = 0.68,
                        seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of every metric.

    Parameters
    ----------
    residuals : array_like
        1-D residuals.
    n_boot : int
        Number of resamples (with replacement, same size as the input).
    level : float
        Central coverage of the interval (0.68 gives the 16th-84th percentiles).
    seed : int
        Seed of the resampling, so that a run's logged intervals are reproducible.

    Returns
    -------
    dict
        Metric name -> ``(lo, hi)``.
    """
    r = np.asarray(residuals, dtype=float).ravel()
    if r.size == 0:
        raise ValueError("no residuals to evaluate (empty subset)")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_VALUES // r.size)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    done = 0
    while done < n_boot:
        k = min(chunk, n_boot - done)
        sample = r[rng.integers(0, r.size, size=(k, r.size))]
        for name, values in residual_metrics(sample).items():
            draws[name].append(np.atleast_1d(values))
        done += k
    q = 100.0 * np.array([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    out = {}
    for name, parts in draws.items():
        lo, hi = np.percentile(np.concatenate(parts), q)
        out[name] = (float(lo), float(hi))
    return out


def evaluate_regression(y_true, y_pred, *, n_boot: int = 1000, level: float = 0.68,
                        seed: int = 0) -> dict[str, Estimate]:
    """Metrics of ``y_pred - y_true`` with bootstrap intervals.

    Non-finite pairs are dropped first.

    Returns
    -------
    dict
        Metric name -> :class:`Estimate`.
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    r = y_pred[ok] - y_true[ok]
    values = residual_metrics(r)
    bounds = bootstrap_intervals(r, n_boot=n_boot, level=level, seed=seed) if n_boot > 0 else {
        name: (float("nan"), float("nan")) for name in METRICS
    }
    return {name: Estimate(values[name], *bounds[name]) for name in METRICS}


def metric_name(subset: str, metric: str, target: str) -> str:
    """MLflow metric name, e.g. ``metric_name("val", "sigma", "teff") == "val/sigma_teff"``."""
    return f"{subset}/{metric}_{target}"


def as_metrics(estimates: dict[str, Estimate], subset: str, target: str) -> dict[str, float]:
    """Flatten estimates to MLflow metrics: ``val/sigma_teff`` plus ``_lo``/``_hi`` bounds."""
    out = {}
    for metric, est in estimates.items():
        name = metric_name(subset, metric, target)
        out[name] = est.value
        out[f"{name}_lo"] = est.lo
        out[f"{name}_hi"] = est.hi
    return out


# --------------------------------------------------------------------------- logg subsets

"""The paper's split of dwarfs (``logg > 4``) and giants (section 4.1)."""


def logg_subsets(logg, threshold: float = LOGG_THRESHOLD) -> dict[str, np.ndarray]:
    """Masks of the paper's logg subsets: ``dwarf`` (``logg > threshold``) and ``giant``.

    Stars without a finite logg are in neither.
    """
    g = np.asarray(logg, dtype=float)
    ok = np.isfinite(g)
    return {"dwarf": ok & (g > threshold), "giant": ok & (g <= threshold)}


# --------------------------------------------------------------------------- classification


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """Accuracy, precision and recall of binary class predictions (class 1 is positive).

    Non-finite labels are dropped. Precision (recall) is NaN when nothing is predicted (is)
    positive, rather than a silent 0.
    """
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    ok = np.isfinite(t) & np.isfinite(p)
    if not ok.any():
        raise ValueError("no labelled examples to evaluate the classifier on")
    t, p = t[ok].astype(int), p[ok].astype(int)
    return {"accuracy": float(accuracy_score(t, p)),
            "precision": float(precision_score(t, p, zero_division=np.nan)),
            "recall": float(recall_score(t, p, zero_division=np.nan))}


# --------------------------------------------------------------------------- uncertainty quality

UNCERTAINTY_METRICS: tuple[str, ...] = ("coverage68", "coverage95", "width68", "width95", "nll",
                                        "crps", "spearman")
CALIBRATION_LEVELS = np.round(np.arange(0.05, 1.0, 0.05), 2)
"""Nominal levels of the calibration curve (0.05 ... 0.95)."""


def _finite(*arrays):
    arrays = [np.asarray(a, dtype=float).ravel() for a in arrays]
    ok = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    return [a[ok] for a in arrays]


def coverage(y, lo, hi) -> float:
    """Fraction of labels inside ``[lo, hi]`` (finite triples only)."""
    y, lo, hi = _finite(y, lo, hi)
    if y.size == 0:
        return float("nan")
    return float(np.mean((y >= lo) & (y <= hi)))


def gaussian_nll(y, mean, std) -> float:
    """Mean negative log-likelihood of ``y`` under ``N(mean, std^2)`` (nats per star)."""
    y, m, s = _finite(y, mean, std)
    keep = s > 0
    y, m, s = y[keep], m[keep], s[keep]
    if y.size == 0:
        return float("nan")
    return float(np.mean(0.5 * np.log(2.0 * np.pi * s * s) + 0.5 * ((y - m) / s) ** 2))


def gaussian_crps(y, mean, std) -> float:
    """Mean continuous ranked probability score of ``N(mean, std^2)`` forecasts (label units).

    Closed form (Gneiting & Raftery 2007): ``s [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]`` with
    ``z = (y - mean) / s``. For ``std -> 0`` it tends to ``|y - mean|``.
    """
    y, m, s = _finite(y, mean, std)
    keep = s > 0
    if not keep.any():
        return float("nan")
    y, m, s = y[keep], m[keep], s[keep]
    z = (y - m) / s
    return float(np.mean(s * (z * (2.0 * norm.cdf(z) - 1.0) + 2.0 * norm.pdf(z)
                              - 1.0 / np.sqrt(np.pi))))


def error_spearman(y, mean, std) -> float:
    """Spearman rank correlation of ``|mean - y|`` with ``std`` (does the spread rank errors?)."""
    y, m, s = _finite(y, mean, std)
    if y.size < 3 or np.ptp(s) == 0 or np.ptp(np.abs(m - y)) == 0:
        return float("nan")
    return float(spearmanr(np.abs(m - y), s).statistic)


def calibration_curve(y, mean, std, levels=CALIBRATION_LEVELS, *, interval=None) -> np.ndarray:
    """Observed coverage of the central intervals at each nominal level.

    Parameters
    ----------
    y, mean, std : array_like
        1-D labels, means and std of one target.
    levels : array_like
        Nominal levels in (0, 1).
    interval : callable, optional
        ``interval(level) -> (lo, hi)``; default the Gaussian ``mean +- z std``.

    Returns
    -------
    numpy.ndarray
        Observed coverage per level (a calibrated model follows the diagonal).
    """
    y, mean, std = (np.asarray(a, dtype=float).ravel() for a in (y, mean, std))
    out = []
    for level in np.asarray(levels, dtype=float):
        if interval is None:
            h = z_value(level) * std
            lo, hi = mean - h, mean + h
        else:
            lo, hi = interval(level)
        out.append(coverage(y, lo, hi))
    return np.asarray(out)


def uncertainty_metrics(y, mean, std, *, interval=None) -> dict[str, float]:
    """Quality of predictive uncertainties of one target (see :data:`UNCERTAINTY_METRICS`).

    Parameters
    ----------
    y, mean, std : array_like
        1-D labels, predicted means and predictive std (physical units).
    interval : callable, optional
        ``interval(level) -> (lo, hi)`` for the 68% and 95% intervals; default Gaussian
        ``mean +- z std`` (use :meth:`Recalibration.interval` for conformal intervals).

    Returns
    -------
    dict
        ``coverage68``, ``coverage95`` (fraction of labels inside), ``width68``, ``width95``
        (mean interval width), ``nll`` (Gaussian, nats), ``crps`` (Gaussian, label units),
        ``spearman`` (|error| vs std).
    """
    y, mean, std = (np.asarray(a, dtype=float).ravel() for a in (y, mean, std))
    out = {}
    for level, tag in INTERVAL_LEVELS.items():
        if interval is None:
            h = z_value(level) * std
            lo, hi = mean - h, mean + h
        else:
            lo, hi = (np.asarray(a, dtype=float).ravel() for a in interval(level))
        out[f"coverage{tag}"] = coverage(y, lo, hi)
        w = _finite(y, hi - lo)[1]
        out[f"width{tag}"] = float(np.mean(w)) if w.size else float("nan")
    out["nll"] = gaussian_nll(y, mean, std)
    out["crps"] = gaussian_crps(y, mean, std)
    out["spearman"] = error_spearman(y, mean, std)
    return out


def uncertainty_report(y, mean, std, targets, subset: str, *, recalibration=None,
                       logg=None, threshold: float = LOGG_THRESHOLD) -> dict[str, float]:
    """MLflow metrics of the uncertainties of several targets, raw and recalibrated.

    Names: ``<subset>/<metric>_raw_<t>`` for the raw spread and ``<subset>/<metric>_cal_<t>``
    for the recalibrated one (``recalibration`` given), e.g. ``val/coverage95_raw_teff`` and
    ``val/coverage95_cal_teff``; with ``logg`` also the coverage of the 95% interval per logg
    subset, ``<subset>/coverage95_{raw,cal}_{dwarf,giant}_<t>``.
    """
    y, mean, std = (np.asarray(a, dtype=float) for a in (y, mean, std))
    out = {}
    cal_std = recalibration.std(std) if recalibration is not None else None
    for j, t in enumerate(targets):
        raw = uncertainty_metrics(y[:, j], mean[:, j], std[:, j])
        out.update({metric_name(subset, f"{k}_raw", t): v for k, v in raw.items()})
        parts = logg_subsets(logg, threshold) if logg is not None else {}
        for name, mask in parts.items():
            if mask.any():
                h = z_value(0.95) * std[mask, j]
                out[metric_name(subset, f"coverage95_raw_{name}", t)] = coverage(
                    y[mask, j], mean[mask, j] - h, mean[mask, j] + h)
        if recalibration is None:
            continue

        def interval(level, j=j, sel=slice(None)):
            lo, hi = recalibration.interval(mean[sel], std[sel], level)
            return lo[:, j], hi[:, j]

        cal = uncertainty_metrics(y[:, j], mean[:, j], cal_std[:, j], interval=interval)
        out.update({metric_name(subset, f"{k}_cal", t): v for k, v in cal.items()})
        for name, mask in parts.items():
            if mask.any():
                lo, hi = interval(0.95, sel=mask)
                out[metric_name(subset, f"coverage95_cal_{name}", t)] = coverage(
                    y[mask, j], lo, hi)
    return out


def subset_regression_metrics(y_true, y_pred, logg, subset: str, target: str, *,
                              threshold: float = LOGG_THRESHOLD, n_boot: int = 1000,
                              level: float = 0.68, seed: int = 0) -> dict[str, float]:
    """:func:`evaluate_regression` on each logg subset, as ``<subset>/<metric>_<part>_<t>``.

    E.g. ``val/sigma_dwarf_teff`` (with ``_lo``/``_hi``) for the stars with ``logg > 4``.
    Subsets without a labelled star are left out.
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    out = {}
    for part, mask in logg_subsets(logg, threshold).items():
        ok = mask & np.isfinite(y_true) & np.isfinite(y_pred)
        if not ok.any():
            continue
        est = evaluate_regression(y_true[ok], y_pred[ok], n_boot=n_boot, level=level, seed=seed)
        out.update(as_metrics({f"{k}_{part}": v for k, v in est.items()}, subset, target))
    return out
