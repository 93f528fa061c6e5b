"""Predictive distributions per star as Gaussian mixtures, and the scores of them.

A head's prediction of one label is a Gaussian ``N(mean, std^2)`` per star: a mixture of one
component. The two-stage logg is a mixture of two: the dwarf head's predictive with the
classifier's weight ``P(logg > 4)`` and the giant head's with the rest, bimodal where the
classifier is unsure. :class:`Mixture` holds either; its quantiles, NLL and CRPS are exact
(the CRPS from scoringrules, a maintained library of proper scoring rules; the log score from
scipy's log densities, summed over components by log-sum-exp, which never underflows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scoringrules as sr
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp, ndtr
from scipy.stats import norm

_BISECTIONS = 60  # halves the bracket to 1e-18 of its width: exact to float precision


@dataclass(frozen=True)
class Mixture:
    """Gaussian mixture predictive of one label for ``N`` stars, ``K`` components each.

    Attributes
    ----------
    weights, means, stds : numpy.ndarray ``[N, K]``
        Component weights (summing to 1 per star), means and standard deviations (> 0).
    """

    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray

    def __post_init__(self):
        w, m, s = (np.atleast_2d(np.asarray(a, float)) for a in (self.weights, self.means, self.stds))
        if not w.shape == m.shape == s.shape:
            raise ValueError(f"weights {w.shape}, means {m.shape} and stds {s.shape} differ in shape")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "stds", s)

    @classmethod
    def gaussian(cls, mean, std) -> Mixture:
        """One component per star."""
        mean, std = np.asarray(mean, float).reshape(-1, 1), np.asarray(std, float).reshape(-1, 1)
        return cls(np.ones_like(mean), mean, std)

    @classmethod
    def two_stage(cls, p_above, above: tuple, below: tuple) -> Mixture:
        """``p`` x ``N(*above)`` + ``(1 - p)`` x ``N(*below)`` (the two-stage logg)."""
        p = np.clip(np.asarray(p_above, float), 0.0, 1.0)
        return cls(np.stack([p, 1.0 - p], 1), np.stack([above[0], below[0]], 1),
                   np.stack([above[1], below[1]], 1))

    def __len__(self) -> int:
        return self.means.shape[0]

    def subset(self, index) -> Mixture:
        """The stars at ``index`` (a mask or integer index)."""
        return Mixture(self.weights[index], self.means[index], self.stds[index])

    def scaled(self, factor: float) -> Mixture:
        """Every component's std times ``factor`` (the recalibrated predictive)."""
        return Mixture(self.weights, self.means, self.stds * float(factor))

    @property
    def mean(self) -> np.ndarray:
        """Mixture mean ``[N]``."""
        return np.sum(self.weights * self.means, 1)

    @property
    def std(self) -> np.ndarray:
        """Mixture standard deviation ``[N]`` (within plus between components)."""
        mu = self.mean
        var = np.sum(self.weights * (self.stds**2 + (self.means - mu[:, None]) ** 2), 1)
        return np.sqrt(np.maximum(var, 0.0))

    def cdf(self, x) -> np.ndarray:
        """P(label <= x) per star; ``x`` broadcasts with ``[N]``."""
        x = np.asarray(x, float)
        return np.sum(self.weights * ndtr((x[..., None] - self.means) / self.stds), -1)

    def prob_above(self, threshold: float) -> np.ndarray:
        """P(label > threshold) per star."""
        return 1.0 - self.cdf(np.full(len(self), float(threshold)))

    def quantile(self, q: float) -> np.ndarray:
        """The ``q`` quantile per star (bisection on the mixture CDF)."""
        if not 0.0 < float(q) < 1.0:
            raise ValueError(f"quantile level must be in (0, 1), got {q}")
        lo = np.min(self.means - 12.0 * self.stds, 1)
        hi = np.max(self.means + 12.0 * self.stds, 1)
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def interval(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Central interval ``(lo, hi)`` at ``level`` (equal tails)."""
        if self.means.shape[1] == 1:
            h = norm.ppf(0.5 + level / 2.0) * self.stds[:, 0]
            return self.means[:, 0] - h, self.means[:, 0] + h
        return self.quantile(0.5 - level / 2.0), self.quantile(0.5 + level / 2.0)

    def nll(self, y) -> np.ndarray:
        """Negative log predictive density of ``y`` per star (nats)."""
        y = np.asarray(y, float)
        # from log densities (scoringrules' log scores take the log of a density, which
        # underflows to inf beyond ~38 sigma: one outlier would make a mean NLL infinite)
        if self.means.shape[1] == 1:
            return -norm.logpdf(y, self.means[:, 0], self.stds[:, 0])
        with np.errstate(divide="ignore"):
            logw = np.log(self.weights)
        return -logsumexp(logw + norm.logpdf(y[:, None], self.means, self.stds), axis=1)

    def crps(self, y) -> np.ndarray:
        """Continuous ranked probability score of ``y`` per star (label units)."""
        y = np.asarray(y, float)
        if self.means.shape[1] == 1:
            return np.asarray(sr.crps_normal(y, self.means[:, 0], self.stds[:, 0]), float)
        return np.asarray(sr.crps_mixnorm(y, self.means, self.stds, self.weights), float)


def fit_scale(mixture: Mixture, y) -> float:
    """The factor on every component's std that maximises the likelihood of ``y``.

    For one component this is the closed form ``sqrt(mean(z^2))`` of the ``variance``
    recalibration; for a mixture a bounded one-dimensional search on log(factor).

    Raises
    ------
    ValueError
        No star with a finite label and prediction.
    """
    y = np.asarray(y, float)
    ok = np.isfinite(y) & np.all(np.isfinite(mixture.means) & (mixture.stds > 0), 1)
    if not ok.any():
        raise ValueError("no star has a finite label, mean and positive std to fit a scale on")
    m, y = mixture.subset(ok), y[ok]
    if m.means.shape[1] == 1:
        z = (y - m.means[:, 0]) / m.stds[:, 0]
        return float(np.sqrt(np.mean(z * z)))

    res = minimize_scalar(lambda t: float(np.mean(m.scaled(np.exp(t)).nll(y))),
                          bounds=(np.log(1e-3), np.log(1e4)), method="bounded",
                          options={"xatol": 1e-6})
    return float(np.exp(res.x))


def conformal_scale(mixture: Mixture, y, level: float) -> float:
    """The smallest factor on every component's std whose central ``level`` intervals hold
    ``ceil((n + 1) level)`` of the ``n`` stars (split conformal on the scaled interval; for one
    component it is the conformal quantile of ``|y - mean| / std`` over the Gaussian ``z``).

    Returns ``inf`` when ``ceil((n + 1) level) > n`` (too few stars for the level).

    Raises
    ------
    ValueError
        No star with a finite label and prediction.
    """
    y = np.asarray(y, float)
    ok = np.isfinite(y) & np.all(np.isfinite(mixture.means) & (mixture.stds > 0), 1)
    if not ok.any():
        raise ValueError("no star has a finite label, mean and positive std to fit a scale on")
    m, y = mixture.subset(ok), y[ok]
    n = len(y)
    need = math.ceil((n + 1) * float(level))
    if need > n:
        return math.inf

    def held(k: float) -> int:
        lo, hi = m.scaled(k).interval(level)
        return int(np.sum((y >= lo) & (y <= hi)))

    lo, hi = 1e-6, 1.0
    while held(hi) < need:  # coverage only grows with the factor
        lo, hi = hi, hi * 4.0
        if hi > 1e12:
            return math.inf
    for _ in range(50):  # relative precision ~1e-15 of the bracket
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if held(mid) < need else (lo, mid)
    return float(hi)
