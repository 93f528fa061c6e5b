"""Regression metrics of residuals with bootstrap intervals, and their MLflow metric names.

Residuals are ``prediction - label``. The paper's figure of merit is ``sigma``, the standard
deviation of the residuals (numpy's population form, ``ddof=0``). Every metric works along the
last axis, so one call evaluates a whole matrix of bootstrap resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826
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
