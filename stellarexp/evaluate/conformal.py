"""Conformal intervals for a head's predictions: crepes' normalised conformal predictive system.

``stage.method=conformal`` trains a base head (``stage.conformal.base``) and replaces its Gaussian
predictive by a conformal predictive system (Vovk et al. 2017; crepes, Bostrom 2022): on fitting
stars the normalised residuals ``(y - mean) / std`` of the base head are collected; a scored
star's predictive distribution is ``mean + std x`` their empirical distribution, so intervals at
any level hold their coverage for exchangeable stars whatever the base head's shape.

It is a full predictive distribution, so it is scored like the others:

- CRPS: of the empirical distribution ``mean + std x residuals`` (scoringrules' ensemble CRPS,
  exact for it; the conformal system's own distribution differs only in its 1 / (n + 1) ranks;
  crepes 0.9.1's CRPS multiplies part of the score by the star's std twice);
- NLL: the empirical distribution has no density, so the density is its smoothing
  (:class:`ResidualDensity`): scikit-learn's ``KernelDensity`` of the fitting stars' normalised
  residuals, the bandwidth chosen by 5-fold cross-validated likelihood on them (``GridSearchCV``;
  a rule of thumb such as Scott's oversmooths the peak of heavy-tailed residuals), mixed with a
  1% Gaussian of the residuals' mean and std so that a residual beyond the fitting ones costs
  tens of nats, not hundreds; ``p(y) = density((y - mean) / std) / std``. This density is wider
  than the empirical distribution (by the kernel's bandwidth): the NLL scores it, the intervals
  and CRPS the conformal system.

The fitting-star NLL a method is chosen by is cross-validated for every method
(:func:`stellarexp.evaluate.out_of_sample.fitting_nll`): here the density, its bandwidth search
included, is fitted on four fifths of the fitting stars and scores the fifth, so neither the
kernel nor the bandwidth is credited for the star it scores (nested cross-validation).

Fitting and scored stars are chosen as for the other methods
(:func:`stellarexp.evaluate.out_of_sample.out_of_sample`): fitted on val and scored on test
under ``split=holdout``, else cross-fitted halves of val (the same seeded halves).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scoringrules as sr
from crepes import ConformalPredictiveSystem
from scipy.stats import norm
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity

from stellarexp.constants import INTERVAL_LEVELS
from stellarexp.evaluate.out_of_sample import fit_nll_folds, halves, score_stars

MIN_FIT_STARS_95 = 39  # ceil((n + 1) 0.975) <= n: the 97.5th percentile of n residuals needs 39
KDE_FOLDS = 5          # cross-validation folds choosing the residual density's bandwidth
KDE_BANDWIDTHS = np.geomspace(0.02, 2.0, 17)  # candidate bandwidths x the residuals' std
TAIL_WEIGHT = 0.01     # weight of the Gaussian guarding the density's tails


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
        Per scored star, the NLL of the smoothed predictive and the CRPS of the empirical
        predictive distribution (NaN where the star is not usable).
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
    ok = usable(y, mean, std)
    if ok.sum() < 2:
        raise ValueError(f"a conformal system needs at least 2 fitting stars, got {int(ok.sum())}")
    return ConformalPredictiveSystem().fit(y[ok] - mean[ok], sigmas=std[ok])


def conformal_intervals(system, mean, std, levels=tuple(INTERVAL_LEVELS)) -> dict:
    """Level -> central ``(lo, hi)`` of the system's predictive distributions."""
    lows = [50.0 * (1.0 - lv) for lv in levels]
    highs = [100.0 - lo for lo in lows]
    bounds = system.predict(np.asarray(mean, float), sigmas=np.asarray(std, float),
                            lower_percentiles=lows, higher_percentiles=highs)
    k = len(levels)
    return {lv: (bounds[:, i], bounds[:, k + i]) for i, lv in enumerate(levels)}


@dataclass(frozen=True)
class ResidualDensity:
    """The smoothed density of normalised residuals: a Gaussian kernel density (its bandwidth
    chosen by cross-validated likelihood) mixed with a small Gaussian of the residuals' own mean
    and std, which keeps a residual beyond the fitting ones from costing hundreds of nats."""

    kernel: KernelDensity
    centre: float
    spread: float
    tail_weight: float = TAIL_WEIGHT

    @classmethod
    def fit(cls, residuals, seed: int = 0) -> ResidualDensity:
        """Fit on normalised residuals ``[N]`` (at least ``2 x KDE_FOLDS``)."""
        z = np.asarray(residuals, float)
        if len(z) < 2 * KDE_FOLDS:
            raise ValueError(f"a residual density needs at least {2 * KDE_FOLDS} fitting stars, "
                             f"got {len(z)}")
        spread = float(np.std(z)) or 1.0
        search = GridSearchCV(KernelDensity(kernel="gaussian"),
                              {"bandwidth": spread * KDE_BANDWIDTHS},
                              cv=KFold(KDE_FOLDS, shuffle=True, random_state=seed)).fit(z[:, None])
        return cls(search.best_estimator_, float(np.mean(z)), spread)

    def log_pdf(self, z) -> np.ndarray:
        """Log density at normalised residuals ``z``."""
        z = np.asarray(z, float)
        return np.logaddexp(np.log1p(-self.tail_weight) + self.kernel.score_samples(z[:, None]),
                            np.log(self.tail_weight) + norm.logpdf(z, self.centre, self.spread))


def predictive_scores(system, y, mean, std, density: ResidualDensity
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per star, the NLL of the smoothed predictive (``density`` of the system's residuals) and
    the CRPS of the empirical distribution ``mean + std x residuals`` (the conformal system's
    distribution up to its 1 / (n + 1) ranks) (NaN where ``y``, ``mean`` or ``std`` is not
    usable)."""
    y, mean, std = (np.asarray(a, float) for a in (y, mean, std))
    nll, crps = np.full(len(y), np.nan), np.full(len(y), np.nan)
    ok = usable(y, mean, std)
    if ok.any():
        z = (y[ok] - mean[ok]) / std[ok]
        nll[ok] = np.log(std[ok]) - density.log_pdf(z)
        alphas = np.asarray(system.alphas, float)  # sorted by crepes
        members = mean[ok, None] + std[ok, None] * alphas[None, :]
        crps[ok] = np.asarray(sr.crps_ensemble(y[ok], members, estimator="qd",
                                               sorted_ensemble=True), float)
    return nll, crps


def usable(y, mean, std) -> np.ndarray:
    """Stars with a finite label, a finite mean and a positive std (the ones fitted and scored)."""
    return np.isfinite(y) & np.isfinite(mean) & np.isfinite(std) & (std > 0)


def fitting_nll(y, mean, std, seed: int = 0) -> float:
    """The cross-validated NLL of the fitting stars (label units): in each fold of
    :func:`~stellarexp.evaluate.out_of_sample.fit_nll_folds` the residual density, its bandwidth
    search included, is fitted on the other folds and scores the fold's stars, as the Gaussian
    methods' factors are (:func:`stellarexp.evaluate.out_of_sample.fitting_nll`)."""
    y, mean, std = (np.asarray(a, float) for a in (y, mean, std))
    ok = usable(y, mean, std)
    z, s = (y[ok] - mean[ok]) / std[ok], std[ok]
    if len(z) < 3 * KDE_FOLDS:  # each inner search fits 4/5 of them and needs 2 x KDE_FOLDS
        return float("nan")
    nll = np.empty(len(z))
    for fit, scored in fit_nll_folds(seed).split(z):
        nll[scored] = np.log(s[scored]) - ResidualDensity.fit(z[fit], seed).log_pdf(z[scored])
    return float(np.mean(nll))


def fit_conformal(y, mean, std, seed: int = 0):
    """The system on the fitting stars, the density of its residuals and its fitting NLL."""
    system = fit_system(y, mean, std)
    if len(system.alphas) < MIN_FIT_STARS_95:
        raise ValueError(f"{len(system.alphas)} fitting stars are too few for a finite 95% "
                         f"conformal interval (at least {MIN_FIT_STARS_95})")
    return (system, ResidualDensity.fit(system.alphas, seed),
            fitting_nll(y, mean, std, seed))


def _part(fitted, y, mean, std):
    system, density, _ = fitted
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
    ok = usable(c.y, c.mean, c.std)
    out = score_stars(c.y[ok], {lv: (lo[ok], hi[ok]) for lv, (lo, hi) in c.intervals.items()},
                      c.nll[ok], c.crps[ok])
    out.update({f"fit_nll_fold{k}": v for k, v in enumerate(c.fit_nll)})
    return out
