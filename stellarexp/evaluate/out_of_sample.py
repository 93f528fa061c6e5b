"""Uncertainty scored out of sample: a recalibration fitted on one subset, scored on another.

A recalibration scored on the stars it was fitted on reaches its nominal coverage by
construction. Here it never is:

- ``split=holdout`` (a test subset exists): fitted on the validation stars, scored on the test
  stars;
- otherwise (``split=paper``): the validation stars are cut in two halves at random (seeded);
  a recalibration fitted on each half is applied to the other, and every validation star is
  scored once, by the half it was not in (cross-fitting).

The recalibration is one factor per label on every component's std (it never moves the mean):
``variance`` the maximum-likelihood factor (:func:`~stellarexp.evaluate.mixture.fit_scale`),
``conformal`` the smallest factor whose ``level`` intervals hold ``ceil((n + 1) level)`` of the
``n`` fitting stars (:func:`~stellarexp.evaluate.mixture.conformal_scale`; for a Gaussian the
split-conformal quantile of ``|y - mean| / std`` over the Gaussian ``z``), ``none`` 1. The same
factors are what the stages store (``recalibration.json``) and the packaged model applies.

Per label the scores are: coverage of the 68% and 95% central intervals against the labels,
with the central 95% range of a Binomial(n, 0.95) count (is 95% coverage consistent with the
nominal level for this many stars?), mean 68%/95% widths, the 95% interval score, NLL and CRPS
(scoringrules), and the
Spearman rho of ``|error|`` with the predictive std, against the labels and, where the dataset
has noise-free truth, against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scoringrules as sr
from scipy.stats import binom, spearmanr
from sklearn.model_selection import KFold

from stellarexp.constants import INTERVAL_LEVELS
from stellarexp.evaluate.mixture import Mixture, conformal_scale, fit_scale

COVERAGE_LEVEL = 0.95  # the nominal level judged against its binomial range
FIT_NLL_FOLDS = 5      # cross-validation folds of every method's fitting NLL


@dataclass(frozen=True)
class OutOfSample:
    """Recalibrated predictives of the scored stars of one label.

    Attributes
    ----------
    scheme : str
        How fitting and scoring stars were chosen, in words (goes into every table).
    subset : str
        The subset the scored stars come from (``val`` or ``test``).
    index : numpy.ndarray
        Positions of the scored stars within that subset, in scoring order.
    y : numpy.ndarray
        Their labels.
    raw, recalibrated : Mixture
        Their predictives before and after the recalibration fitted on the other stars.
    scales : tuple of float
        The fitted factor(s): one (holdout) or one per half (cross-fitting).
    fold : numpy.ndarray
        Per scored star, the fold that scores it (fitted on the other stars): holdout 0;
        cross-fitting 0 for the second half, 1 for the first.
    fit_nll : tuple of float
        Per fold, the cross-validated NLL of its fitting stars (:func:`fitting_nll`): what a
        method is chosen by (never the scored stars'). Holdout: one fold (val); cross-fitting:
        fold 0 fitted on the first half (scored on the second), fold 1 the reverse.
    """

    scheme: str
    subset: str
    index: np.ndarray
    y: np.ndarray
    raw: Mixture
    recalibrated: Mixture
    scales: tuple[float, ...]
    fold: np.ndarray
    fit_nll: tuple[float, ...] = ()


def fitting_nll(pred: Mixture, y, method: str, level: float, seed: int = 0) -> float:
    """The cross-validated NLL of the recalibrated predictives on the fitting stars: in each of
    :data:`FIT_NLL_FOLDS` folds of the finite labels, the factor of ``method`` is fitted on the
    other folds and the fold's stars are scored with it (NaN if there are too few stars or a
    factor is not finite). Every method's fitting NLL is estimated this way, its whole
    calibration fitted without the stars it scores, so no method is favoured by an in-sample
    fit (:func:`stellarexp.evaluate.conformal.fitting_nll` for the conformal density)."""
    y = np.asarray(y, float)
    ok = np.flatnonzero(np.isfinite(y))
    if len(ok) < 2 * FIT_NLL_FOLDS:
        return float("nan")
    nll = np.empty(len(ok))
    for fit, scored in fit_nll_folds(seed).split(ok):
        k = recalibration_factor(pred.subset(ok[fit]), y[ok[fit]], method, level)
        if not np.isfinite(k):
            return float("nan")
        nll[scored] = pred.subset(ok[scored]).scaled(k).nll(y[ok[scored]])
    return float(np.mean(nll))


def fit_nll_folds(seed: int) -> KFold:
    """The seeded folds every method's fitting NLL is cross-validated on."""
    return KFold(FIT_NLL_FOLDS, shuffle=True, random_state=seed)


def recalibration_factor(fit: Mixture, y, method: str, level: float) -> float:
    """The std factor of ``method`` fitted on predictives ``fit`` and labels ``y``."""
    if method == "none":
        return 1.0
    if method == "conformal":
        return conformal_scale(fit, y, level)
    if method != "variance":
        raise ValueError(f"recalibration method must be variance, conformal or none, got {method!r}")
    return fit_scale(fit, y)


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of ``range(n)`` drawn at random with ``seed`` (sorted positions)."""
    if n < 4:
        raise ValueError(f"cross-fitting needs at least 4 validation stars, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def out_of_sample(predictives: dict[str, Mixture], labels: dict[str, np.ndarray], *,
                  method: str = "variance", level: float = COVERAGE_LEVEL, seed: int = 0
                  ) -> OutOfSample:
    """Fit the recalibration on one set of stars and apply it to others (module docstring).

    Parameters
    ----------
    predictives, labels : dict
        Subset (``val``, optionally ``test``) -> predictives and labels ``[N]`` of one label.
    method : {"variance", "conformal", "none"}
    level : float
        Conformal: the level the factor is matched to.
    seed : int
        Draws the cross-fitting halves.
    """
    val_pred, val_y = predictives["val"], np.asarray(labels["val"], float)
    if "test" in predictives:
        test_y = np.asarray(labels["test"], float)
        k = recalibration_factor(val_pred, val_y, method, level)
        index = np.arange(len(test_y))
        scheme = f"recalibration fitted on val ({len(val_y)} stars), scored on test ({len(test_y)})"
        return OutOfSample(scheme, "test", index, test_y, predictives["test"],
                           predictives["test"].scaled(k), (k,), np.zeros(len(test_y), int),
                           (fitting_nll(val_pred, val_y, method, level, seed),))
    a, b = halves(len(val_y), seed)
    k_a = recalibration_factor(val_pred.subset(a), val_y[a], method, level)  # applied to b
    k_b = recalibration_factor(val_pred.subset(b), val_y[b], method, level)  # applied to a
    index = np.concatenate([a, b])
    raw = val_pred.subset(index)
    factor = np.concatenate([np.full(len(a), k_b), np.full(len(b), k_a)])
    recal = Mixture(raw.weights, raw.means, raw.stds * factor[:, None])
    scheme = (f"cross-fitted halves of val ({len(a)} + {len(b)} stars): each half recalibrated "
              "by the other, all scored")
    fit = tuple(fitting_nll(val_pred.subset(h), val_y[h], method, level, seed) for h in (a, b))
    fold = np.concatenate([np.ones(len(a), int), np.zeros(len(b), int)])
    return OutOfSample(scheme, "val", index, val_y[index], raw, recal, (k_a, k_b), fold, fit)


def binomial_range(n: int, level: float = COVERAGE_LEVEL) -> tuple[float, float]:
    """Central 95% range of the coverage fraction of ``n`` stars if the true coverage is ``level``."""
    if n <= 0:
        return float("nan"), float("nan")
    lo, hi = binom.interval(0.95, n, level)
    return float(lo) / n, float(hi) / n


def _spearman(err, std) -> float:
    ok = np.isfinite(err) & np.isfinite(std)
    if ok.sum() < 3 or np.ptp(std[ok]) == 0 or np.ptp(err[ok]) == 0:
        return float("nan")
    return float(spearmanr(err[ok], std[ok]).statistic)


def score(pred: Mixture, y, truth=None, *, rank_std=None) -> dict[str, float]:
    """Scores of predictives ``pred`` against labels ``y`` (and ``truth``) (module docstring).

    ``rank_std`` (default ``pred.std``) is the spread whose ranking of the errors is scored: pass
    the raw one, since cross-fitted halves rescale by different factors (and a conformal factor
    may be infinite for a tiny half) while the ranking is the method's own.
    """
    y = np.asarray(y, float)
    spread = pred.std if rank_std is None else np.asarray(rank_std, float)
    ok = np.isfinite(y) & np.all(np.isfinite(pred.means) & (pred.stds > 0), 1)
    p, y = pred.subset(ok), y[ok]
    out = score_stars(y, {lv: p.interval(lv) for lv in INTERVAL_LEVELS},
                      p.nll(y) if len(y) else np.array([]), p.crps(y) if len(y) else np.array([]))
    out["spearman"] = _spearman(np.abs(p.mean - y), spread[ok])
    if truth is not None:
        t = np.asarray(truth, float)[ok]
        out["spearman_truth"] = _spearman(np.abs(p.mean - t), spread[ok])
    return out


def score_stars(y, intervals: dict, nll=None, crps=None) -> dict[str, float]:
    """Scores of stars from their own intervals and per-star NLL and CRPS, whatever their
    predictive: coverage and mean width of the 68% and 95% intervals, the 95% coverage's binomial
    range (and whether it holds), the 95% interval score, mean NLL and CRPS (NaN when not given).

    Parameters
    ----------
    y : array_like
        Finite labels ``[N]``.
    intervals : dict
        Level (0.68, 0.95) -> ``(lo, hi)`` arrays ``[N]``.
    nll, crps : array_like, optional
        Per-star scores ``[N]``.
    """
    y = np.asarray(y, float)
    n = len(y)
    nan = float("nan")
    out: dict[str, float] = {"n": float(n)}
    for level, tag in INTERVAL_LEVELS.items():
        lo, hi = (np.asarray(v, float) for v in intervals[level])
        out[f"coverage{tag}"] = float(np.mean((y >= lo) & (y <= hi))) if n else nan
        out[f"width{tag}"] = float(np.mean(hi - lo)) if n else nan
    lo, hi = binomial_range(n)
    out.update({"coverage95_lo": lo, "coverage95_hi": hi,
                "coverage95_ok": float(lo <= out["coverage95"] <= hi) if n else nan,
                "interval_score95": interval_score(y, *intervals[0.95], level=0.95),
                "nll": float(np.mean(nll)) if nll is not None and n else nan,
                "crps": float(np.mean(crps)) if crps is not None and n else nan})
    return out


def interval_score(y, lo, hi, level: float = 0.95) -> float:
    """Mean interval score (Gneiting & Raftery 2007) of central ``level`` intervals: width plus
    ``2 / (1 - level)`` times the miss distance (scoringrules); label units, lower is better."""
    y = np.asarray(y, float)
    if not len(y):
        return float("nan")
    return float(np.mean(sr.interval_score(y, np.asarray(lo, float), np.asarray(hi, float),
                                           1.0 - float(level))))


def reliability(pred: Mixture, y, levels) -> np.ndarray:
    """Observed coverage of the central interval at each nominal level (the reliability curve)."""
    y = np.asarray(y, float)
    out = []
    for level in levels:
        lo, hi = pred.interval(float(level))
        ok = np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)
        out.append(float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))) if ok.any() else np.nan)
    return np.asarray(out)


def binned_errors(pred: Mixture, y, n_bins: int = 10) -> dict[str, np.ndarray]:
    """RMS error against ``y`` in bins of equal counts of predicted std (a calibrated spread
    puts each bin's RMS error on its mean std).

    Returns
    -------
    dict
        ``std`` (mean predicted std per bin), ``rmse`` (RMS of mean - y per bin), ``n``.
    """
    y = np.asarray(y, float)
    s, e = pred.std, pred.mean - y
    ok = np.isfinite(s) & np.isfinite(e)
    s, e = s[ok], e[ok]
    if len(s) < n_bins:
        return {"std": np.array([]), "rmse": np.array([]), "n": np.array([])}
    groups = np.array_split(np.argsort(s, kind="stable"), n_bins)
    return {"std": np.array([s[g].mean() for g in groups]),
            "rmse": np.array([np.sqrt(np.mean(e[g] ** 2)) for g in groups]),
            "n": np.array([len(g) for g in groups])}
