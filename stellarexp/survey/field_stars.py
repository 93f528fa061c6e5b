"""Unlabelled neighbour stars of a high-latitude field (contamination and crowding).

A rising number-magnitude law and colours on the same stellar locus as the labelled stars
(:func:`stellarexp.survey.colours.intrinsic_colours`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stellarexp.sdss import BANDS, EXTINCTION_COEFF, mag_to_nmgy
from stellarexp.survey.arguments import check_n, check_nonneg, check_r_range, colour_scatter_draw
from stellarexp.survey.colours import intrinsic_colours
from stellarexp.survey.galaxy import draw_ebv
from stellarexp.survey.magnitudes import main_sequence_logg


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def draw_field_stars(
    n: int,
    rng,
    *,
    r_range: tuple[float, float] = (13.0, 23.0),
    count_slope: float = 0.18,
    halo_fraction_bright: float = 0.1,
    halo_fraction_faint: float = 0.75,
    mdwarf_fraction_bright: float = 0.10,
    mdwarf_fraction_faint: float = 0.40,
    turnoff_fraction: float = 0.33,
    giant_fraction: float = 0.03,
    ebv_scale: float = 0.03,
    ebv_sigma: float = 0.5,
    ebv: float | None = None,
    colour_scatter: float = 0.02,
) -> pd.DataFrame:
    """Draw unlabelled neighbour stars for a high-latitude field.

    Apparent r follows d log10 N / dr = ``count_slope`` (counts rising to the faint end;
    0.18 is the slope measured on real SDSS stars of run 4510 camcol 4, and gives ~1% of
    stars brighter than r = 14.5 over 13-23, so saturated neighbours occur now and then).
    Each star is an M dwarf, an F/G turn-off star, a G/K dwarf or a giant; the M-dwarf
    share rises from ``mdwarf_fraction_bright`` to ``mdwarf_fraction_faint`` around r = 18
    and the halo share (metal-poor, [Fe/H] ~ -1.5) from ``halo_fraction_bright`` to
    ``halo_fraction_faint`` around r = 19.5, as seen at high latitude. Labels are turned into
    colours with the same relations as labelled stars (:func:`intrinsic_colours`).

    Parameters
    ----------
    n : int
        Number of stars (> 0).
    rng : numpy.random.Generator or int or None
    r_range : (float, float)
        Bright and faint limits of apparent r (mag, dust included).
    count_slope : float
        d log10 N / d r (>= 0; 0 gives a flat distribution).
    halo_fraction_bright, halo_fraction_faint : float
        Halo share of non-M-dwarf stars at bright and faint magnitudes (0..1).
    mdwarf_fraction_bright, mdwarf_fraction_faint : float
        M-dwarf share at bright and faint magnitudes (0..1).
    turnoff_fraction, giant_fraction : float
        Shares of F/G turn-off stars and of giants (0..1); G/K dwarfs fill the rest.
    ebv_scale, ebv_sigma, ebv
        Reddening, see :func:`draw_ebv`.
    colour_scatter : float
        Intrinsic scatter (mag) of each colour.

    Returns
    -------
    pandas.DataFrame
        ``teff``, ``logg``, ``fe_h``, ``population`` ('disc'/'halo'), ``kind``
        ('mdwarf', 'turnoff', 'gk_dwarf', 'giant'), ``ebv``, ``extinction_<b>``, ``mag_<b>``
        and ``flux_<b>`` for b in ugriz.
    """
    n = check_n(n)
    lo, hi = check_r_range(r_range)
    count_slope = check_nonneg("count_slope", count_slope)
    colour_scatter = check_nonneg("colour_scatter", colour_scatter)
    fractions = {
        "halo_fraction_bright": halo_fraction_bright, "halo_fraction_faint": halo_fraction_faint,
        "mdwarf_fraction_bright": mdwarf_fraction_bright, "mdwarf_fraction_faint": mdwarf_fraction_faint,
        "turnoff_fraction": turnoff_fraction, "giant_fraction": giant_fraction,
    }
    for name, f in fractions.items():
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"{name} must be within 0..1, got {f!r}")
    if max(mdwarf_fraction_bright, mdwarf_fraction_faint) + turnoff_fraction + giant_fraction > 1.0:
        raise ValueError(
            "mdwarf_fraction_bright/faint + turnoff_fraction + giant_fraction must not exceed 1, got "
            f"{max(mdwarf_fraction_bright, mdwarf_fraction_faint)} + {turnoff_fraction} + {giant_fraction}"
        )
    draw_ebv(1, np.random.default_rng(0), ebv_scale=ebv_scale, ebv_sigma=ebv_sigma, ebv=ebv)
    rng = np.random.default_rng(rng)

    # Truncated exponential in r: p(r) ~ 10^(slope r).
    u = rng.random(n)
    if count_slope > 0:
        k = count_slope * np.log(10.0)
        r = lo + np.log1p(u * np.expm1(k * (hi - lo))) / k
    else:
        r = lo + u * (hi - lo)

    f_m = mdwarf_fraction_bright + (mdwarf_fraction_faint - mdwarf_fraction_bright) * _logistic(r - 18.0)
    f_halo = halo_fraction_bright + (halo_fraction_faint - halo_fraction_bright) * _logistic(r - 19.5)
    x = rng.random(n)
    kind = np.select(
        [x < f_m, x < f_m + turnoff_fraction, x < f_m + turnoff_fraction + giant_fraction],
        ["mdwarf", "turnoff", "giant"],
        "gk_dwarf",
    )
    halo = (kind != "mdwarf") & (rng.random(n) < f_halo)  # halo M dwarfs are too faint to matter
    teff = np.select(
        [kind == "mdwarf", kind == "turnoff", kind == "giant"],
        [
            rng.uniform(3300.0, 3900.0, n),
            np.clip(rng.normal(6200.0, 300.0, n), 5300.0, 7000.0),
            rng.uniform(4000.0, 5200.0, n),
        ],
        rng.uniform(4000.0, 5600.0, n),
    )
    giant = kind == "giant"
    # Halo turn-off stars are slightly evolved: lower logg than the disc main sequence.
    logg = np.where(giant, rng.uniform(1.5, 3.2, n), main_sequence_logg(teff) - np.where(halo, 0.2, 0.0))
    fe_h = np.where(
        halo, np.clip(rng.normal(-1.5, 0.4, n), -2.8, -0.5), np.clip(rng.normal(-0.5, 0.3, n), -1.5, 0.5)
    )

    col = intrinsic_colours(teff, logg, fe_h)
    scat = colour_scatter_draw(n, rng, colour_scatter)
    if scat:
        col = {key: v + scat[key] for key, v in col.items()}
    e = draw_ebv(n, rng, ebv_scale=ebv_scale, ebv_sigma=ebv_sigma, ebv=ebv)
    ext = {b: EXTINCTION_COEFF[b] * e for b in BANDS}
    r0 = r - ext["r"]  # dust-free r; the colours are intrinsic
    dust_free = {"r": r0, "g": r0 + col["g_r"]}
    dust_free["u"] = dust_free["g"] + col["u_g"]
    dust_free["i"] = r0 - col["r_i"]
    dust_free["z"] = dust_free["i"] - col["i_z"]

    df = pd.DataFrame({"teff": teff, "logg": logg, "fe_h": fe_h,
                       "population": np.where(halo, "halo", "disc"), "kind": kind, "ebv": e})
    for b in BANDS:
        df[f"extinction_{b}"] = ext[b]
    for b in BANDS:
        df[f"mag_{b}"] = r if b == "r" else dust_free[b] + ext[b]
    for b in BANDS:
        df[f"flux_{b}"] = mag_to_nmgy(df[f"mag_{b}"].to_numpy())
    return df
