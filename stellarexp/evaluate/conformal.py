"""Conformal intervals for a head's predictions: crepes' normalised conformal predictive system.

``stage.method=conformal`` trains a base head (``stage.conformal.base``) and replaces its Gaussian
predictive by a conformal predictive system (Vovk et al. 2017; crepes, Bostrom 2022): on fitting
stars the normalised residuals ``(y - mean) / std`` of the base head are collected; a scored
star's predictive distribution is ``mean + std x`` their empirical distribution, so intervals at
any level hold their coverage for exchangeable stars whatever the base head's shape.

It is a full predictive distribution, so it is scored like the others:

- CRPS: of that empirical distribution (scoringrules' ensemble CRPS, exact for it; crepes 0.9.1's
  own CRPS multiplies part of the score by the star's std twice);
- NLL: the empirical distribution has no density, so the density is its Gaussian-kernel
  smoothing: scikit-learn's ``KernelDensity`` of the fitting stars' normalised residuals, the
  bandwidth chosen by 5-fold cross-validated likelihood on them (``GridSearchCV``; a rule of
  thumb such as Scott's oversmooths the peak of heavy-tailed residuals), and
  ``p(y) = kde((y - mean) / std) / std``. Its fitting-star NLL (what a method is chosen by) is
  cross-validated: each fitting star's density comes from the kernel fitted on the other folds,
  as a scored star's comes from stars it is not, so the kernel is not credited for having seen
  the star it scores.

Fitting and scored stars are chosen as for the other methods
(:func:`stellarexp.evaluate.out_of_sample.out_of_sample`): fitted on val and scored on test
under ``split=holdout``, else cross-fitted halves of val (the same seeded halves).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scoringrules as sr
from crepes import ConformalPredictiveSystem
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity

from stellarexp.evaluate.out_of_sample import halves, score_stars

MIN_FIT_STARS_95 = 39  # ceil((n + 1) 0.975) <= n: the 97.5th percentile of n residuals needs 39
KDE_FOLDS = 5          # cross-validation folds choosing the residual density's bandwidth
KDE_BANDWIDTHS = np.geomspace(0.02, 2.0, 25)  # candidate bandwidths x the residuals' std


@dataclass(frozen=True)
class ConformalScored:
    """The scored stars of one label under a conformal predictive system.

    Attributes
    ----------
    scheme, subset : str
        As :class:`~stellarexp.evaluate.out_of_sample.OutOfSample`'s.
    index : numpy.ndarray
        Positions of the scored stars in their subset.
    y, mean, std : numpy.ndarray
        Labels, the base head's mean and std (the normaliser) of the scored stars.
    intervals : dict
        Level (0.68, 0.95) -> ``(lo, hi)`` of the scored stars.
    nll, crps : numpy.ndarray
        Per scored star, the NLL of the smoothed predictive and the CRPS of the conformal
        predictive distribution (NaN where the label is missing).
    fold : numpy.ndarray
        Per scored star, the fold that scores it (as
        :class:`~stellarexp.evaluate.out_of_sample.OutOfSample`'s).
    fit_nll : tuple of float
        Per fold, the cross-validated NLL of its fitting stars (module docstring).
    """

    scheme: str
    subset: str
    index: np.ndarray
    y: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    intervals: dict
    nll: np.ndarray
    crps: np.ndarray
    fold: np.ndarray
    fit_nll: tuple[float, ...] = ()


def fit_system(y, mean, std) -> ConformalPredictiveSystem:
    """A crepes system fitted on the normalised residuals of the finite stars."""
    y, mean, std = (np.asarray(a, float) for a in (y, mean, std))
    ok = np.isfinite(y) & np.isfinite(mean) & (std > 0)
    if ok.sum() < 2:
        raise ValueError(f"a conformal system needs at least 2 fitting stars, got {int(ok.sum())}")
    return ConformalPredictiveSystem().fit(y[ok] - mean[ok], sigmas=std[ok])


def conformal_intervals(system, mean, std, levels=(0.68, 0.95)) -> dict:
    """Level -> central ``(lo, hi)`` of the system's predictive distributions."""
    lows = [50.0 * (1.0 - lv) for lv in levels]
    highs = [100.0 - lo for lo in lows]
    bounds = system.predict(np.asarray(mean, float), sigmas=np.asarray(std, float),
                            lower_percentiles=lows, higher_percentiles=highs)
    k = len(levels)
    return {lv: (bounds[:, i], bounds[:, k + i]) for i, lv in enumerate(levels)}


def residual_density(residuals, seed: int = 0) -> tuple[KernelDensity, np.ndarray]:
    """The Gaussian-kernel density of normalised residuals, its bandwidth chosen by
    cross-validated likelihood, and each residual's log density under the kernel fitted on the
    other folds (module docstring)."""
    z = np.asarray(residuals, float)[:, None]
    if len(z) < 2 * KDE_FOLDS:
        raise ValueError(f"a residual density needs at least {2 * KDE_FOLDS} fitting stars, "
                         f"got {len(z)}")
    spread = float(np.std(z)) or 1.0
    folds = KFold(KDE_FOLDS, shuffle=True, random_state=seed)
    search = GridSearchCV(KernelDensity(kernel="gaussian"),
                          {"bandwidth": spread * KDE_BANDWIDTHS}, cv=folds).fit(z)
    held_out = np.empty(len(z))
    for fit, scored in folds.split(z):
        held_out[scored] = KernelDensity(**search.best_params_).fit(z[fit]).score_samples(z[scored])
    return search.best_estimator_, held_out


def predictive_scores(system, y, mean, std, density: KernelDensity
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per star, the NLL of the smoothed predictive (``density`` of the system's residuals) and
    the CRPS of the conformal predictive distribution ``mean + std x residuals`` (NaN where
    ``y`` is missing)."""
    y, mean, std = (np.asarray(a, float) for a in (y, mean, std))
    nll, crps = np.full(len(y), np.nan), np.full(len(y), np.nan)
    ok = np.isfinite(y) & np.isfinite(mean) & (std > 0)
    if ok.any():
        z = (y[ok] - mean[ok]) / std[ok]
        nll[ok] = np.log(std[ok]) - density.score_samples(z[:, None])
        alphas = np.asarray(system.alphas, float)  # sorted by crepes
        members = mean[ok, None] + std[ok, None] * alphas[None, :]
        crps[ok] = np.asarray(sr.crps_ensemble(y[ok], members, estimator="qd",
                                               sorted_ensemble=True), float)
    return nll, crps


def fit_conformal(y, mean, std, seed: int = 0):
    """A system on the fitting stars, the density of its residuals and its fitting NLL (the
    cross-validated NLL of the fitting stars in label units)."""
    system = fit_system(y, mean, std)
    density, held_out = residual_density(system.alphas, seed)
    y, std = np.asarray(y, float), np.asarray(std, float)
    fitted = np.isfinite(y) & np.isfinite(np.asarray(mean, float)) & (std > 0)
    return system, density, float(np.mean(np.log(std[fitted])) - np.mean(held_out))


def _part(fitted, y, mean, std):
    system, density, _ = fitted
    n_fit = len(system.alphas)
    if n_fit < MIN_FIT_STARS_95:
        raise ValueError(f"{n_fit} fitting stars are too few for a finite 95% conformal "
                         f"interval (at least {MIN_FIT_STARS_95})")
    return (conformal_intervals(system, mean, std),
            *predictive_scores(system, y, mean, std, density))


def conformal_out_of_sample(mean: dict, std: dict, labels: dict, *, seed: int = 0
                            ) -> ConformalScored:
    """Fit on some stars, score others (module docstring).

    Parameters
    ----------
    mean, std, labels : dict
        Subset (``val``, optionally ``test``) -> the base head's mean, std and the labels ``[N]``.
    seed : int
        Draws the cross-fitting halves (the same halves as the Gaussian methods') and the
        folds that choose the residual density's bandwidth.
    """
    m = {s: np.asarray(v, float) for s, v in mean.items()}
    sd = {s: np.asarray(v, float) for s, v in std.items()}
    y = {s: np.asarray(v, float) for s, v in labels.items()}
    if "test" in m:
        fitted = fit_conformal(y["val"], m["val"], sd["val"], seed)
        iv, nll, crps = _part(fitted, y["test"], m["test"], sd["test"])
        scheme = (f"conformal system fitted on val ({len(y['val'])} stars), scored on test "
                  f"({len(y['test'])})")
        return ConformalScored(scheme, "test", np.arange(len(y["test"])), y["test"], m["test"],
                               sd["test"], iv, nll, crps, np.zeros(len(y["test"]), int),
                               (fitted[2],))
    a, b = halves(len(y["val"]), seed)
    parts, fit_nll = [], []
    for fit, scored in ((a, b), (b, a)):  # fold 0 fits on a, scores b; fold 1 the reverse
        fitted = fit_conformal(y["val"][fit], m["val"][fit], sd["val"][fit], seed)
        parts.append(_part(fitted, y["val"][scored], m["val"][scored], sd["val"][scored]))
        fit_nll.append(fitted[2])
    index = np.concatenate([b, a])
    intervals = {lv: tuple(np.concatenate([p[0][lv][i] for p in parts]) for i in (0, 1))
                 for lv in parts[0][0]}
    nll, crps = (np.concatenate([p[k] for p in parts]) for k in (1, 2))
    scheme = (f"cross-fitted halves of val ({len(a)} + {len(b)} stars): each half's conformal "
              "system scores the other")
    fold = np.concatenate([np.zeros(len(b), int), np.ones(len(a), int)])
    return ConformalScored(scheme, "val", index, y["val"][index], m["val"][index],
                           sd["val"][index], intervals, nll, crps, fold, tuple(fit_nll))


def score_conformal(c: ConformalScored) -> dict[str, float]:
    """Coverage and width at 68/95%, the binomial range, the 95% interval score, NLL and CRPS of
    the finite scored stars, and the fitting folds' NLL as ``fit_nll_fold<k>``."""
    ok = np.isfinite(c.y)
    out = score_stars(c.y[ok], {lv: (lo[ok], hi[ok]) for lv, (lo, hi) in c.intervals.items()},
                      c.nll[ok], c.crps[ok])
    out.update({f"fit_nll_fold{k}": v for k, v in enumerate(c.fit_nll)})
    return out
