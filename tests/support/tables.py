"""A small star table (magnitudes, extinction, labels) for runs on ``data=table``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_star_csv(path: Path, n: int = 240) -> None:
    """Magnitudes whose colours follow Teff (and a little [Fe/H]), with extinction columns."""
    rng = np.random.default_rng(1)
    teff, logg, fe_h = rng.uniform(4000, 6500, n), rng.uniform(1, 5, n), rng.uniform(-2, 0.5, n)
    r = rng.uniform(15, 17, n)
    cols = {}
    for i, band in enumerate("ugriz"):
        slope = (2 - i) * (6000 - teff) / 2500
        cols[f"psfmag_{band}"] = r + slope + (0.2 * fe_h if band == "u" else 0) + rng.normal(0, 0.02, n)
        cols[f"extinction_{band}"] = np.full(n, 0.02 * (5 - i))
    pd.DataFrame({**cols, "teff": teff, "logg": logg, "fe_h": fe_h}).to_csv(path, index=False)
