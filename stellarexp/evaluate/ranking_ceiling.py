"""How well could any spread rank a method's errors? A fixed LightGBM as the ceiling.

A predictive std ranks errors if stars with a larger std have larger ``|error|``. How large
that Spearman rho can be depends on the data: if the inputs hold little about where a method
errs, no spread can rank its errors well. The ceiling asks a LightGBM regressor, with fixed
settings chosen before any method was scored (:data:`CEILING_SETTINGS`), to predict a method's
``|error against the noise-free truth|`` from what every method sees of a star — its PSF
magnitudes, their errors, its adjacent colours and their errors, its extinctions; never a label
or the truth — cross-fitted over 5 folds (each star predicted by a model that never saw it). The
rho of those predictions with the actual ``|error|`` is printed beside the method's own rho.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from lightgbm import LGBMRegressor
from scipy.stats import spearmanr
from sklearn.model_selection import KFold

from stellarexp.constants import BANDS

CEILING_SETTINGS = {"n_estimators": 300, "learning_rate": 0.03, "num_leaves": 15,
                    "min_child_samples": 20, "subsample": 1.0, "colsample_bytree": 1.0,
                    "reg_lambda": 1.0, "n_jobs": 1, "deterministic": True,
                    "force_row_wise": True, "verbose": -1}
"""LightGBM settings of the ceiling (fixed; small trees, slow learning, no tuning)."""
CEILING_FOLDS = 5


def ceiling_features(stars: pd.DataFrame) -> pd.DataFrame:
    """What a method sees of each star: magnitudes, colours, their errors, extinctions.

    Parameters
    ----------
    stars : pandas.DataFrame
        Columns ``psfmag_<b>``, ``psfmagerr_<b>`` and ``extinction_<b>`` for b in ugriz.

    Raises
    ------
    ValueError
        A column is missing (named).
    """
    need = [f"{k}_{b}" for k in ("psfmag", "psfmagerr", "extinction") for b in BANDS]
    missing = [c for c in need if c not in stars.columns]
    if missing:
        raise ValueError(f"the ranking ceiling needs the star table's {missing}")
    out = stars[need].astype(float).reset_index(drop=True)
    for a, b in itertools.pairwise(BANDS):
        out[f"{a}_{b}"] = out[f"psfmag_{a}"] - out[f"psfmag_{b}"]
        out[f"{a}_{b}_err"] = np.hypot(out[f"psfmagerr_{a}"], out[f"psfmagerr_{b}"])
    return out


def ceiling_rho(features: pd.DataFrame, abs_error, *, seed: int = 0) -> float:
    """Spearman rho of cross-fitted LightGBM predictions of ``abs_error`` with ``abs_error``.

    Parameters
    ----------
    features : pandas.DataFrame
        :func:`ceiling_features` of the scored stars.
    abs_error : array_like
        The method's ``|mean - truth|`` per star.
    seed : int
        Folds and the regressor's seed.

    Returns
    -------
    float
        NaN when fewer than ``10 x CEILING_FOLDS`` stars have a finite error.
    """
    err = np.asarray(abs_error, float)
    ok = np.isfinite(err)
    if ok.sum() < 10 * CEILING_FOLDS:
        return float("nan")
    x, e = features.loc[ok].reset_index(drop=True), err[ok]
    pred = np.empty_like(e)
    for train, held in KFold(CEILING_FOLDS, shuffle=True, random_state=seed).split(x):
        model = LGBMRegressor(random_state=seed, **CEILING_SETTINGS)
        model.fit(x.iloc[train], e[train])
        pred[held] = model.predict(x.iloc[held])
    if np.ptp(pred) == 0:
        return float("nan")
    return float(spearmanr(pred, e).statistic)
