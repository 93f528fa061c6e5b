"""What the sweep benchmark feeds its sweeps: a generated star table and cost-fixing overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stellarexp.io_utils import write_csv_atomic

# hyperparameters fixed per model family so that every trial of a study costs about the same
FIXED_BY_MODEL = {
    "random_forest": ["+model.params.n_estimators={n}", "+model.params.max_depth=8",
                      "+model.params.max_features=0.5"],
    "xgboost": ["+model.params.n_estimators={n}", "+model.params.max_depth=6",
                "+model.params.colsample_bytree=0.5", "+model.params.colsample_bynode=0.5",
                "+model.params.subsample=0.8"],
    "lightgbm": ["+model.params.n_estimators={n}", "+model.params.max_depth=6",
                 "+model.params.num_leaves=31"],
    "catboost": ["+model.params.n_estimators={n}", "+model.params.depth=6",
                 "+model.params.border_count=128"],
}


def write_star_table(path: Path, n: int, seed: int = 0) -> Path:
    """Write a CSV of ``n`` stars for ``data=table``: magnitudes whose colours follow the labels.

    Parameters
    ----------
    path : Path
        The CSV file to write (atomically).
    n : int
        Number of stars (rows).
    seed : int, optional
        Seed of the random generator, so repeated runs see the same table.

    Returns
    -------
    Path
        ``path``.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    teff = rng.uniform(3800.0, 7000.0, n)
    logg = rng.uniform(0.5, 5.0, n)
    fe_h = rng.normal(-0.3, 0.4, n)
    r = rng.uniform(14.0, 18.0, n)
    cols = {}
    for i, band in enumerate("ugriz"):
        # bluer bands fainter for cooler stars; u also feels metallicity, a little logg in g
        colour = (2 - i) * (5800.0 - teff) / 2200.0 + (0.25 * fe_h if band == "u" else 0.0) \
            + (0.03 * (logg - 3.0) if band == "g" else 0.0)
        ext = rng.uniform(0.01, 0.08, n) * (5 - i)
        cols[f"psfmag_{band}"] = r + colour + ext + rng.normal(0.0, 0.02, n)
        cols[f"extinction_{band}"] = ext
    frame = pd.DataFrame({**cols, "teff": teff + rng.normal(0, 50, n),
                          "logg": logg + rng.normal(0, 0.1, n), "fe_h": fe_h + rng.normal(0, 0.05, n)})
    write_csv_atomic(frame, path, index=False)
    return path


def fixed_params(study: str, n_estimators: int) -> list[str]:
    """The cost-fixing overrides of a baseline study (by its model family).

    Parameters
    ----------
    study : str
        Name of a shipped sweep (``sweep=<study>``); its prefix names the model family.
    n_estimators : int
        Trees (boosting rounds) per trial.

    Returns
    -------
    list of str
        Hydra overrides from :data:`FIXED_BY_MODEL`; empty for an unknown family.
    """
    for family, lines in FIXED_BY_MODEL.items():
        if study.startswith(family):
            return [line.format(n=n_estimators) for line in lines]
    return []
