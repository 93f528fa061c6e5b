"""i-z along the stellar locus as a function of r-i, fitted to real SDSS stars.

A cubic in r-i fitted with scikit-learn's Huber regressor to the packaged calibObj stars of
run 4510, camcol 4 (``stellarexp/resources/calibobj_4510_4_stars.npz``; PSF magnitudes
corrected with their own extinction, r < 19.5 so that i-z errors stay below ~0.05 mag), over
-0.1 <= r-i <= 1.7 (G dwarfs to M5). Outside, i-z continues linearly with the fit's slope at
the edge. West et al. (2011, Table 2) M-dwarf means serve as an independent check
(docs/population.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import HuberRegressor

from stellarexp.sdss import BANDS
from stellarexp.survey.colour_fits import packaged_colour_fits
from stellarexp.survey.realism.anchors import load_calibobj_stars

RI_DOMAIN: tuple[float, float] = (-0.1, 1.7)
R_LIMIT = 19.5
POLY_DEGREE = 3
HUBER_EPSILON = 1.35


@dataclass(frozen=True)
class IzRelation:
    """i-z = sum_k coef[k] (r-i)^k inside ``RI_DOMAIN``, linear outside.

    Attributes
    ----------
    coef : tuple of float
        Polynomial coefficients, constant first.
    n_stars : int
    robust_scatter : float
        1.4826 x MAD of the residuals (mag).
    """

    coef: tuple[float, ...]
    n_stars: int
    robust_scatter: float

    def _poly(self, x):
        return sum(c * x**k for k, c in enumerate(self.coef))

    def _slope(self, x):
        return sum(k * c * x ** (k - 1) for k, c in enumerate(self.coef) if k)

    def __call__(self, r_i) -> np.ndarray:
        """i-z at r-i (continued linearly from the domain's edges)."""
        x = np.asarray(r_i, float)
        lo, hi = RI_DOMAIN
        inside = self._poly(np.clip(x, lo, hi))
        return inside + np.where(x < lo, self._slope(lo) * (x - lo), 0.0) + \
            np.where(x > hi, self._slope(hi) * (x - hi), 0.0)


def fit_iz_relation(mags) -> IzRelation:
    """Fit i-z as a cubic in r-i to dereddened stellar magnitudes (Huber loss).

    Parameters
    ----------
    mags : pandas.DataFrame
        Dereddened magnitudes ``r``, ``i``, ``z`` of stars.

    Returns
    -------
    IzRelation
    """
    missing = [b for b in "riz" if b not in mags.columns]
    if missing:
        raise ValueError(f"the star table lacks magnitude column(s) {missing}")
    r, i, z = (mags[b].to_numpy(float) for b in "riz")
    ri, iz = r - i, i - z
    ok = np.isfinite(ri) & np.isfinite(iz) & (r < R_LIMIT) & (ri >= RI_DOMAIN[0]) & (ri <= RI_DOMAIN[1])
    if ok.sum() < 50:
        raise ValueError(f"only {int(ok.sum())} stars with r < {R_LIMIT} inside r-i {RI_DOMAIN} (need >= 50)")
    design = np.vander(ri[ok], POLY_DEGREE + 1, increasing=True)
    model = HuberRegressor(epsilon=HUBER_EPSILON, alpha=0.0, max_iter=5000, fit_intercept=False)
    model.fit(design, iz[ok])
    resid = iz[ok] - model.predict(design)
    mad = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    return IzRelation(tuple(float(c) for c in model.coef_), int(ok.sum()), mad)


def calibobj_magnitudes():
    """Dereddened PSF magnitudes ``u..z`` of the packaged calibObj stars (a DataFrame)."""
    cat = load_calibobj_stars()
    return pd.DataFrame({b: 22.5 - 2.5 * np.log10(np.clip(cat[f"psfflux_{b}"].to_numpy(float), 1e-3, None))
                         - cat[f"extinction_{b}"].to_numpy(float) for b in BANDS})


@functools.lru_cache(maxsize=1)
def packaged_iz_relation() -> IzRelation:
    """The relation fitted to the packaged calibObj stars, as frozen in the package
    (:mod:`stellarexp.survey.colour_fits`)."""
    d = packaged_colour_fits()["iz"]
    return IzRelation(tuple(d["coef"]), int(d["n_stars"]), float(d["robust_scatter"]))
