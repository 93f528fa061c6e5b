"""Conformal intervals for a head's predictions: crepes' normalised conformal predictive system.

``stage.method=conformal`` trains a base head (``stage.conformal.base``) and replaces its Gaussian
predictive by a conformal predictive system (Vovk et al. 2017; crepes, Bostrom 2022): on fitting
stars the normalised residuals ``(y - mean) / std`` of the base head are collected; a scored
star's predictive distribution is ``mean + std x`` their empirical distribution (smoothed), so
intervals at any level hold their coverage for exchangeable stars whatever the base head's shape,
and the CRPS of that distribution is defined. Its density is not (a step function), so NLL is
left blank and the method cannot be chosen by NLL.

Fitting and scored stars are chosen as for the other methods
(:func:`stellarexp.evaluate.out_of_sample.out_of_sample`): fitted on val and scored on test
under ``split=holdout``, else cross-fitted halves of val (the same seeded halves).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from crepes import ConformalPredictiveSystem

from stellarexp.evaluate.out_of_sample import binomial_range, halves, interval_score


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
    crps : float
        Mean CRPS of the conformal predictive distributions (crepes).
    fold : numpy.ndarray
        Per scored star, the fold that scores it (as
        :class:`~stellarexp.evaluate.out_of_sample.OutOfSample`'s).
    """

    scheme: str
    subset: str
    index: np.ndarray
    y: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    intervals: dict
    crps: float
    fold: np.ndarray


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


def _part(system, y, mean, std, seed: int):
    ok = np.isfinite(y)
    n_fit = len(system.alphas)
    if n_fit < 39:  # ceil((n + 1) 0.975) <= n: the 97.5th percentile needs 39 fitting stars
        raise ValueError(f"{n_fit} fitting stars are too few for a finite 95% conformal "
                         "interval (at least 39)")
    crps = float(system.evaluate(mean[ok], y[ok], sigmas=std[ok], metrics=["CRPS"],
                                 seed=seed)["CRPS"]) if ok.any() else float("nan")
    return conformal_intervals(system, mean, std), crps, int(ok.sum())


def conformal_out_of_sample(mean: dict, std: dict, labels: dict, *, seed: int = 0
                            ) -> ConformalScored:
    """Fit on some stars, score others (module docstring).

    Parameters
    ----------
    mean, std, labels : dict
        Subset (``val``, optionally ``test``) -> the base head's mean, std and the labels ``[N]``.
    seed : int
        Draws the cross-fitting halves (the same halves as the Gaussian methods') and crepes'
        smoothing.
    """
    # in units of the fitting stars' median std: crepes 0.9.1's CRPS is not scale-equivariant
    # far from unit scale (Gaussian residuals x1000: 79,498 against the exact 692), while every
    # score here is, so working in these units and scaling back is exact
    unit = float(np.nanmedian(np.asarray(std["val"], float)))
    if not (np.isfinite(unit) and unit > 0):
        raise ValueError("the base head's validation std is not positive: no conformal system")
    m = {s: np.asarray(v, float) / unit for s, v in mean.items()}
    sd = {s: np.asarray(v, float) / unit for s, v in std.items()}
    y = {s: np.asarray(v, float) / unit for s, v in labels.items()}

    def back(scheme, subset, index, ys, ms, ss, iv, crps, fold):
        return ConformalScored(scheme, subset, index, ys * unit, ms * unit, ss * unit,
                               {lv: (lo * unit, hi * unit) for lv, (lo, hi) in iv.items()},
                               crps * unit, fold)

    if "test" in m:
        system = fit_system(y["val"], m["val"], sd["val"])
        iv, crps, _ = _part(system, y["test"], m["test"], sd["test"], seed)
        scheme = (f"conformal system fitted on val ({len(y['val'])} stars), scored on test "
                  f"({len(y['test'])})")
        return back(scheme, "test", np.arange(len(y["test"])), y["test"], m["test"], sd["test"],
                    iv, crps, np.zeros(len(y["test"]), int))
    a, b = halves(len(y["val"]), seed)
    parts = []
    for fit, scored in ((a, b), (b, a)):
        system = fit_system(y["val"][fit], m["val"][fit], sd["val"][fit])
        parts.append(_part(system, y["val"][scored], m["val"][scored], sd["val"][scored], seed))
    index = np.concatenate([b, a])
    intervals = {lv: tuple(np.concatenate([p[0][lv][i] for p in parts]) for i in (0, 1))
                 for lv in parts[0][0]}
    counts = np.array([p[2] for p in parts], float)
    crps = float(np.sum([p[1] * c for p, c in zip(parts, counts)]) / max(counts.sum(), 1.0))
    scheme = (f"cross-fitted halves of val ({len(a)} + {len(b)} stars): each half's conformal "
              "system scores the other")
    fold = np.concatenate([np.zeros(len(b), int), np.ones(len(a), int)])
    return back(scheme, "val", index, y["val"][index], m["val"][index], sd["val"][index],
                intervals, crps, fold)


def score_conformal(c: ConformalScored) -> dict[str, float]:
    """Coverage and width at 68/95%, the binomial range, the 95% interval score and CRPS of the
    finite scored stars (no NLL: see the module docstring)."""
    ok = np.isfinite(c.y)
    y = c.y[ok]
    out: dict[str, float] = {"n": float(ok.sum())}
    for level, tag in ((0.68, "68"), (0.95, "95")):
        lo, hi = (v[ok] for v in c.intervals[level])
        out[f"coverage{tag}"] = float(np.mean((y >= lo) & (y <= hi))) if len(y) else float("nan")
        out[f"width{tag}"] = float(np.mean(hi - lo)) if len(y) else float("nan")
    lo, hi = binomial_range(len(y))
    out.update({"coverage95_lo": lo, "coverage95_hi": hi,
                "coverage95_ok": float(lo <= out["coverage95"] <= hi) if len(y) else float("nan"),
                "interval_score95": interval_score(y, *(v[ok] for v in c.intervals[0.95])),
                "crps": c.crps})
    return out
