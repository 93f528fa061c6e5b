"""The dwarf u-g colour as a function of g-r and [Fe/H], fitted to real SSPP stars.

u-g is SDSS's metallicity colour (Ivezic et al. 2008). Its relation to g-r and [Fe/H] is fitted
to the packaged half of the SSPP table (13,954 real SDSS stars with spectroscopic [Fe/H];
``stellarexp/resources/sspp_colours_feh.npz``, see ``docs/simulation.md``): a full cubic in
(g-r, [Fe/H]) fitted with scikit-learn's Huber regressor, which keeps the few giants and bad
photometry of the table from steering it; where the fit would turn bluer with more metals
(red metal-poor corner, few dwarfs there) it is held flat. The fitted coefficients are frozen in
the package (:mod:`stellarexp.survey.colour_fits`), and the relation is only used inside the domain the table covers densely; outside it
the relation is continued from the domain's edge
(:func:`stellarexp.survey.colours.ug_from_feh`).

The SSPP colours are as published (not dereddened; high-latitude SEGUE fields, E(B-V) a few
hundredths), so the relation carries that small reddening, as the realism report's comparison
does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from sklearn.linear_model import HuberRegressor
from sklearn.preprocessing import PolynomialFeatures

from stellarexp.constants import MAD_TO_SIGMA
from stellarexp.survey.colour_fits import packaged_colour_fits

# Domain of the fit: where the SSPP half holds >= ~15 stars per 0.1 mag x 0.5 dex cell.
GR_DOMAIN: tuple[float, float] = (0.15, 1.2)
FEH_DOMAIN: tuple[float, float] = (-2.5, 0.5)
POLY_DEGREE = 3
# Redder than the domain (K7-M dwarfs, where g-r saturates near 1.5 while r-i keeps growing) u-g
# continues linearly with the slope of the table's own red tail (disc metallicities).
RED_TAIL_GR: tuple[float, float] = (1.1, 1.8)
RED_TAIL_MIN_FEH = -1.0
HUBER_EPSILON = 1.35  # scikit-learn's default: 95% efficiency for Gaussian residuals
# Rows of the table kept for the fit: sane colours (the table holds a few -10013 entries).
SANE_COLOUR = {"ug": (0.0, 3.5), "ri": (-2.0, 2.0), "iz": (-2.0, 2.0)}


@dataclass(frozen=True)
class UgRelation:
    """A fitted u-g = P(g-r, [Fe/H]) polynomial and its domain.

    Attributes
    ----------
    coef : tuple of float
        Coefficients of the monomials ``(g-r)^i [Fe/H]^j`` listed in ``powers``.
    powers : tuple of (int, int)
    red_slope : float
        d(u-g)/d(g-r) redder than the domain (a line fitted to the table's red tail).
    n_stars : int
        Stars the fit used.
    robust_scatter : float
        1.4826 x MAD of the fit's residuals (mag).
    """

    coef: tuple[float, ...]
    powers: tuple[tuple[int, int], ...]
    red_slope: float
    n_stars: int
    robust_scatter: float

    def polynomial(self, g_r, fe_h) -> np.ndarray:
        """The fitted polynomial itself at (g-r, [Fe/H]) (no clamping)."""
        y, f = np.asarray(g_r, float), np.asarray(fe_h, float)
        return sum(c * y**i * f**j for c, (i, j) in zip(self.coef, self.powers))

    @functools.cached_property
    def _grid(self):
        y = np.linspace(*GR_DOMAIN, 211)
        f = np.linspace(*FEH_DOMAIN, 301)
        table = self.polynomial(y[:, None], f[None, :])
        # never bluer for more metals: below a turnover (red, metal-poor corner, where the table's
        # few stars mix with halo giants) the relation is held flat at the turnover's value
        table = np.minimum.accumulate(table[:, ::-1], axis=1)[:, ::-1]
        return RegularGridInterpolator((y, f), table)

    def __call__(self, g_r, fe_h) -> np.ndarray:
        """u-g at (g-r, [Fe/H]) clamped into the fit's domain, non-decreasing in [Fe/H]."""
        y, f = np.broadcast_arrays(np.clip(np.asarray(g_r, float), *GR_DOMAIN),
                                   np.clip(np.asarray(fe_h, float), *FEH_DOMAIN))
        return self._grid(np.stack([y.ravel(), f.ravel()], axis=-1)).reshape(y.shape)



def fit_ug_relation(sspp) -> UgRelation:
    """Fit u-g as a cubic in (g-r, [Fe/H]) to SSPP stars (Huber loss).

    Parameters
    ----------
    sspp : pandas.DataFrame
        Columns ``ug``, ``gr``, ``ri``, ``iz`` (mag) and ``feh`` (dex).

    Returns
    -------
    UgRelation
    """
    missing = [c for c in ("ug", "gr", "ri", "iz", "feh") if c not in sspp.columns]
    if missing:
        raise ValueError(f"the SSPP table lacks column(s) {missing}")
    ok = (sspp["gr"].between(*GR_DOMAIN) & sspp["feh"].between(*FEH_DOMAIN)).to_numpy().copy()
    for col, (lo, hi) in SANE_COLOUR.items():
        ok &= sspp[col].between(lo, hi).to_numpy()
    if ok.sum() < 100:
        raise ValueError(f"only {int(ok.sum())} SSPP stars inside the fit's domain (need >= 100)")
    tail = (sspp["gr"].between(*RED_TAIL_GR) & (sspp["feh"] > RED_TAIL_MIN_FEH)
            & sspp["ug"].between(*SANE_COLOUR["ug"])).to_numpy()
    if tail.sum() < 20:
        raise ValueError(f"only {int(tail.sum())} SSPP stars with {RED_TAIL_GR[0]} < g-r < {RED_TAIL_GR[1]} "
                         f"and [Fe/H] > {RED_TAIL_MIN_FEH} for the red tail (need >= 20)")
    red_slope = float(np.polyfit(sspp["gr"].to_numpy(float)[tail], sspp["ug"].to_numpy(float)[tail], 1)[0])
    rows = sspp[ok]
    poly = PolynomialFeatures(POLY_DEGREE)
    design = poly.fit_transform(rows[["gr", "feh"]].to_numpy(float))
    model = HuberRegressor(epsilon=HUBER_EPSILON, alpha=0.0, max_iter=5000, fit_intercept=False)
    model.fit(design, rows["ug"].to_numpy(float))
    resid = rows["ug"].to_numpy(float) - model.predict(design)
    mad = MAD_TO_SIGMA * float(np.median(np.abs(resid - np.median(resid))))
    powers = tuple((int(i), int(j)) for i, j in poly.powers_)
    return UgRelation(tuple(float(c) for c in model.coef_), powers, red_slope, int(ok.sum()), mad)


@functools.lru_cache(maxsize=1)
def packaged_ug_relation() -> UgRelation:
    """The relation fitted to the packaged SSPP half, as frozen in the package
    (:mod:`stellarexp.survey.colour_fits`)."""
    d = packaged_colour_fits()["ug"]
    return UgRelation(tuple(d["coef"]), tuple(tuple(p) for p in d["powers"]), float(d["red_slope"]),
                      int(d["n_stars"]), float(d["robust_scatter"]))
