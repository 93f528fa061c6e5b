"""How far a dwarf's r-i lies off the Juric et al. (2008) locus, fitted to real SSPP stars.

The Juric et al. locus gives r-i from g-r for the high-latitude stars it was fitted on. Real SSPP
dwarfs of one g-r differ from it with metallicity: the packaged SSPP half (13,954 real SDSS stars
with spectroscopic [Fe/H], ``stellarexp/resources/sspp_colours_feh.npz``) lies about 0.02 mag
redder than the locus at [Fe/H] -1.5 and 0.02 mag bluer at [Fe/H] +0.2 (d(r-i)/d[Fe/H] about
-0.03 at fixed g-r, steeper for redder stars). The offset is fitted as a quadratic in (g-r, [Fe/H])
with scikit-learn's Huber regressor over the domain the table covers densely, and clamped to that
domain outside it. Its coefficients are frozen in the package
(:mod:`stellarexp.survey.colour_fits`); :func:`stellarexp.survey.colours.intrinsic_colours`
applies it to dwarfs. As with the u-g relation the SSPP colours are used as published (not
dereddened; E(B-V) a few hundredths at their high latitudes).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from stellarexp.constants import MAD_TO_SIGMA

# Domain of the fit: where the SSPP half holds >= ~25 stars per 0.1 mag x 0.5 dex cell.
GR_DOMAIN: tuple[float, float] = (0.2, 1.1)
FEH_DOMAIN: tuple[float, float] = (-2.5, 0.5)
POLY_DEGREE = 2  # a cubic leaves the same scatter (0.0178 mag) and bends at the domain's edges
HUBER_EPSILON = 1.35  # scikit-learn's default: 95% efficiency for Gaussian residuals
SANE_COLOUR = {"ug": (0.0, 3.5), "ri": (-2.0, 2.0)}


@dataclass(frozen=True)
class RiOffset:
    """A fitted offset r-i minus the Juric locus, a polynomial in (g-r, [Fe/H]).

    Attributes
    ----------
    coef : tuple of float
        Coefficients of the monomials ``(g-r)^i [Fe/H]^j`` listed in ``powers``.
    powers : tuple of (int, int)
    n_stars : int
        Stars the fit used.
    robust_scatter : float
        1.4826 x MAD of the fit's residuals (mag).
    """

    coef: tuple[float, ...]
    powers: tuple[tuple[int, int], ...]
    n_stars: int
    robust_scatter: float

    def __call__(self, g_r, fe_h) -> np.ndarray:
        """Offset (mag) at (g-r, [Fe/H]), both clamped into the fit's domain."""
        y = np.clip(np.asarray(g_r, float), *GR_DOMAIN)
        f = np.clip(np.asarray(fe_h, float), *FEH_DOMAIN)
        return sum(c * y**i * f**j for c, (i, j) in zip(self.coef, self.powers))


def fit_ri_offset(sspp) -> RiOffset:
    """Fit r-i minus the Juric et al. (2008) locus as a quadratic in (g-r, [Fe/H]) (Huber loss).

    Parameters
    ----------
    sspp : pandas.DataFrame
        Columns ``ug``, ``gr``, ``ri`` (mag) and ``feh`` (dex).

    Returns
    -------
    RiOffset

    Raises
    ------
    ValueError
        A column is missing, or fewer than 100 stars lie inside the domain.
    """
    from sklearn.linear_model import HuberRegressor
    from sklearn.preprocessing import PolynomialFeatures

    from stellarexp.survey.colours import ri_from_gr

    missing = [c for c in ("ug", "gr", "ri", "feh") if c not in sspp.columns]
    if missing:
        raise ValueError(f"the SSPP table lacks column(s) {missing}")
    ok = (sspp["gr"].between(*GR_DOMAIN) & sspp["feh"].between(*FEH_DOMAIN)).to_numpy().copy()
    for col, (lo, hi) in SANE_COLOUR.items():
        ok &= sspp[col].between(lo, hi).to_numpy()
    if ok.sum() < 100:
        raise ValueError(f"only {int(ok.sum())} SSPP stars inside the fit's domain (need >= 100)")
    rows = sspp[ok]
    offset = rows["ri"].to_numpy(float) - ri_from_gr(rows["gr"].to_numpy(float))
    poly = PolynomialFeatures(POLY_DEGREE)
    design = poly.fit_transform(rows[["gr", "feh"]].to_numpy(float))
    model = HuberRegressor(epsilon=HUBER_EPSILON, alpha=0.0, max_iter=5000, fit_intercept=False)
    model.fit(design, offset)
    resid = offset - model.predict(design)
    mad = MAD_TO_SIGMA * float(np.median(np.abs(resid - np.median(resid))))
    powers = tuple((int(i), int(j)) for i, j in poly.powers_)
    return RiOffset(tuple(float(c) for c in model.coef_), powers, int(ok.sum()), mad)


@functools.lru_cache(maxsize=1)
def packaged_ri_offset() -> RiOffset:
    """The offset fitted to the packaged SSPP half, as frozen in the package
    (:mod:`stellarexp.survey.colour_fits`)."""
    from stellarexp.survey.colour_fits import packaged_colour_fits

    d = packaged_colour_fits()["ri"]
    return RiOffset(tuple(d["coef"]), tuple(tuple(p) for p in d["powers"]), int(d["n_stars"]),
                    float(d["robust_scatter"]))
