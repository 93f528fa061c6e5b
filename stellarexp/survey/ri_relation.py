"""How far a dwarf's r-i lies off the Juric et al. (2008) locus, measured on real SSPP stars.

The Juric et al. locus gives r-i from g-r for the high-latitude stars it was fitted on. Real SSPP
dwarfs of one g-r differ from it with metallicity: the packaged SSPP half (13,954 real SDSS stars
with spectroscopic [Fe/H], ``stellarexp/resources/sspp_colours_feh.npz``) lies about 0.02 mag
redder than the locus at [Fe/H] -1.5 and 0.02 mag bluer at [Fe/H] +0.2 for G dwarfs (steeper
for redder stars), while its reddest metal-rich K dwarfs (g-r 0.9-1.1) lie redder again, a turn
no low-order polynomial in (g-r, [Fe/H]) follows. The offset is therefore the table of median
offsets in the cells the realism report compares (g-r in 0.1 mag, [Fe/H] in the bins -2.5, -1.5,
-1, -0.5, 0, +0.5), each from at least ``MIN_STARS`` stars, interpolated bilinearly between cell
centres, held beyond the outer centres; a cell with fewer stars takes the value interpolated
along [Fe/H] from its row's filled cells. The table is frozen in the package
(:mod:`stellarexp.survey.colour_fits`); :func:`stellarexp.survey.colours.intrinsic_colours`
applies it to dwarfs. As with the u-g relation the SSPP colours are used as published (not
dereddened; E(B-V) a few hundredths at their high latitudes).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from stellarexp.constants import MAD_TO_SIGMA
from stellarexp.survey.colour_fits import packaged_colour_fits

GR_EDGES: tuple[float, ...] = tuple(round(0.2 + 0.1 * k, 1) for k in range(11))  # 0.2 ... 1.2
FEH_EDGES: tuple[float, ...] = (-2.5, -1.5, -1.0, -0.5, 0.0, 0.5)
GR_DOMAIN: tuple[float, float] = (GR_EDGES[0], GR_EDGES[-1])
MIN_STARS = 20  # a cell's median from fewer stars is too noisy (robust scatter 0.02 mag a star)
SANE_COLOUR = {"ug": (0.0, 3.5), "ri": (-2.0, 2.0)}


@dataclass(frozen=True)
class RiOffset:
    """Median offset r-i minus the Juric locus per (g-r, [Fe/H]) cell, interpolated bilinearly.

    Attributes
    ----------
    table : tuple of tuple of float
        Offset (mag) at the cell centres, rows along g-r, columns along [Fe/H].
    counts : tuple of tuple of int
        Stars behind each cell (cells under ``MIN_STARS`` were filled along [Fe/H]).
    n_stars : int
        Stars the table used.
    robust_scatter : float
        1.4826 x MAD of the stars' offsets about the table (mag).
    """

    table: tuple[tuple[float, ...], ...]
    counts: tuple[tuple[int, ...], ...]
    n_stars: int
    robust_scatter: float

    @functools.cached_property
    def _interpolator(self):
        return RegularGridInterpolator((_centres(GR_EDGES), _centres(FEH_EDGES)),
                                       np.asarray(self.table, float))

    def __call__(self, g_r, fe_h) -> np.ndarray:
        """Offset (mag) at (g-r, [Fe/H]), held beyond the outer cell centres."""
        gc, fc = _centres(GR_EDGES), _centres(FEH_EDGES)
        y, f = np.broadcast_arrays(np.clip(np.asarray(g_r, float), gc[0], gc[-1]),
                                   np.clip(np.asarray(fe_h, float), fc[0], fc[-1]))
        return self._interpolator(np.stack([y.ravel(), f.ravel()], -1)).reshape(y.shape)


def _centres(edges) -> np.ndarray:
    e = np.asarray(edges, float)
    return 0.5 * (e[:-1] + e[1:])


def fit_ri_offset(sspp) -> RiOffset:
    """Median r-i minus the Juric et al. (2008) locus per cell of SSPP stars.

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
        A column is missing, or a row of the table (one g-r bin) has no cell with
        ``MIN_STARS`` stars.
    """
    from stellarexp.survey.colours import ri_from_gr

    missing = [c for c in ("ug", "gr", "ri", "feh") if c not in sspp.columns]
    if missing:
        raise ValueError(f"the SSPP table lacks column(s) {missing}")
    ok = np.ones(len(sspp), bool)
    for col, (lo, hi) in SANE_COLOUR.items():
        ok &= sspp[col].between(lo, hi).to_numpy()
    gr, feh = sspp["gr"].to_numpy(float)[ok], sspp["feh"].to_numpy(float)[ok]
    offset = sspp["ri"].to_numpy(float)[ok] - ri_from_gr(gr)
    i = np.digitize(gr, GR_EDGES) - 1
    j = np.digitize(feh, FEH_EDGES) - 1
    shape = (len(GR_EDGES) - 1, len(FEH_EDGES) - 1)
    inside = (i >= 0) & (i < shape[0]) & (j >= 0) & (j < shape[1])
    table, counts = np.full(shape, np.nan), np.zeros(shape, int)
    for a in range(shape[0]):
        for b in range(shape[1]):
            cell = inside & (i == a) & (j == b)
            counts[a, b] = int(cell.sum())
            if counts[a, b] >= MIN_STARS:
                table[a, b] = float(np.median(offset[cell]))
        filled = np.isfinite(table[a])
        if not filled.any():
            raise ValueError(f"no cell of g-r {GR_EDGES[a]}-{GR_EDGES[a + 1]} holds {MIN_STARS} "
                             "SSPP stars: the table cannot be built")
        fc = _centres(FEH_EDGES)
        table[a] = np.interp(fc, fc[filled], table[a][filled])
    model = RiOffset(tuple(map(tuple, table.tolist())), tuple(map(tuple, counts.tolist())),
                     int(inside.sum()), 0.0)
    resid = offset[inside] - model(gr[inside], feh[inside])
    mad = MAD_TO_SIGMA * float(np.median(np.abs(resid - np.median(resid))))
    return RiOffset(model.table, model.counts, model.n_stars, mad)


@functools.lru_cache(maxsize=1)
def packaged_ri_offset() -> RiOffset:
    """The offset fitted to the packaged SSPP half, as frozen in the package
    (:mod:`stellarexp.survey.colour_fits`)."""
    d = packaged_colour_fits()["ri"]
    return RiOffset(tuple(map(tuple, d["table"])), tuple(map(tuple, d["counts"])), int(d["n_stars"]),
                    float(d["robust_scatter"]))
