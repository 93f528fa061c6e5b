"""How well could any dwarf/giant classifier do? One given noise-free photometry and parallax.

The two-stage logg (paper section 4.1) needs a classifier of ``logg > 4``; how accurate it can
be depends on the data: subgiants near the threshold, unresolved binaries and the spread of
masses blur the class even for perfect inputs. The ceiling asks a LightGBM classifier, with
fixed settings (:data:`CLASS_CEILING_SETTINGS`, chosen before any classifier was scored), to tell
the true class from what perfect data would give — the noise-free dereddened colours, r
magnitude and absolute r magnitude from the true parallax — trained on the training stars'
true classes and scored on held-out stars against their true classes. Synthetic data only
(:func:`stellarexp.data.pipeline.noise_free_inputs`).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier

from stellarexp.constants import BANDS

CLASS_CEILING_SETTINGS = {"n_estimators": 400, "learning_rate": 0.03, "num_leaves": 15,
                          "min_child_samples": 10, "reg_lambda": 1.0, "n_jobs": 1,
                          "deterministic": True, "force_row_wise": True, "verbose": -1}
"""LightGBM settings of the ceiling (fixed; no tuning)."""


def noise_free_features(noise_free: pd.DataFrame) -> pd.DataFrame:
    """Adjacent dereddened colours, r0 and the absolute r magnitude of
    :func:`stellarexp.data.pipeline.noise_free_inputs` rows (a non-positive true parallax
    gives NaN, which LightGBM routes as missing)."""
    out = pd.DataFrame({f"{a}-{b}": noise_free[f"mag0_{a}"] - noise_free[f"mag0_{b}"]
                        for a, b in itertools.pairwise(BANDS)})
    out["r0"] = noise_free["mag0_r"].to_numpy(float)
    plx = noise_free["parallax_true"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["abs_r"] = np.where(plx > 0, out["r0"] + 5.0 * np.log10(plx) - 10.0, np.nan)
    return out


def fit_class_ceiling(train: pd.DataFrame, train_logg, threshold: float, *,
                      seed: int = 0) -> LGBMClassifier | None:
    """The ceiling classifier, fitted on the training stars' noise-free inputs and true classes.

    Parameters
    ----------
    train : pandas.DataFrame
        :func:`stellarexp.data.pipeline.noise_free_inputs` rows of the training stars.
    train_logg : array-like
        Their noise-free logg.
    threshold : float
        Class 1 is ``logg > threshold``.
    seed : int

    Returns
    -------
    lightgbm.LGBMClassifier or None
        ``None`` when the training stars hold one class only (or none).
    """
    y = np.asarray(train_logg, float)
    fit = np.isfinite(y)
    classes = (y[fit] > threshold).astype(int)
    if len(np.unique(classes)) < 2:
        return None
    model = LGBMClassifier(random_state=seed, **CLASS_CEILING_SETTINGS)
    return model.fit(noise_free_features(train)[fit], classes)


def class_ceiling_accuracy(model: LGBMClassifier | None, test: pd.DataFrame, test_logg,
                           threshold: float) -> float:
    """Accuracy of :func:`fit_class_ceiling`'s classifier against the true class.

    Parameters
    ----------
    model : lightgbm.LGBMClassifier or None
    test : pandas.DataFrame
        :func:`stellarexp.data.pipeline.noise_free_inputs` rows of the scored stars.
    test_logg : array-like
        Their noise-free logg.
    threshold : float

    Returns
    -------
    float
        The fraction of scored stars (finite true logg) whose class it gets right; NaN without a
        model or a star to score.
    """
    y = np.asarray(test_logg, float)
    score = np.isfinite(y)
    if model is None or not score.any():
        return float("nan")
    pred = model.predict(noise_free_features(test)[score])
    return float(np.mean(pred == (y[score] > threshold)))
