"""Real stars scatter about the Teff-colour relation: colours of a slightly different Teff.

Huang et al. (2015, MNRAS 454, 2863) calibrated Teff against colours (SDSS g-r among them) on
about two hundred stars with interferometric Teff; their calibrations leave normalised residuals
of typically 2.0% for dwarfs (luminosity classes IV-V) and 1.5% for giants (II-III). Ramirez &
Melendez (2005) find 30-120 K for infrared-flux-method calibrations. A star here gets the colours
of ``Teff (1 + delta)``, delta Gaussian with that spread, so its colours move together along the
stellar locus (the locus does not widen; its labels and luminosity keep the true Teff). The
residuals include the calibrators' own Teff errors (better than 2.5%): the values are an upper
bound of the intrinsic scatter (docs/simulation.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stellarexp.survey.colours import intrinsic_colours

# Huang et al. (2015): fractional Teff residual of the colour calibrations
HUANG_2015: dict[str, float] = {"dwarf": 0.020, "giant": 0.015}
# classes IV and V (dwarfs and subgiants) against II and III in Huang et al.'s split
SUBGIANT_LOGG = 3.5
COLOURS: tuple[str, ...] = ("u_g", "g_r", "r_i", "i_z")


def check_scatter(scatter: Mapping | None) -> dict[str, float] | None:
    """``{"dwarf": f, "giant": f}`` with fractions in [0, 0.1], or None; ValueError otherwise."""
    if scatter is None:
        return None
    value = {str(k): float(v) for k, v in dict(scatter).items()}
    if set(value) != set(HUANG_2015) or not all(0.0 <= v <= 0.1 for v in value.values()):
        raise ValueError(f"data.teff_colour_scatter must map dwarf and giant to fractions in [0, 0.1] "
                         f"(Huang et al. 2015: {HUANG_2015}), got {dict(scatter)!r}")
    return value


def colour_offsets(teff, logg, fe_h, rng, scatter: Mapping | None) -> dict[str, np.ndarray] | None:
    """Offsets of u-g, g-r, r-i, i-z that give each star the colours of ``Teff (1 + delta)``.

    Parameters
    ----------
    teff, logg, fe_h : array_like
        True labels.
    rng : numpy.random.Generator
    scatter : mapping or None
        Fractional spread for ``dwarf`` (logg > 3.5) and ``giant`` stars; None draws nothing.
    """
    scatter = check_scatter(scatter)
    if scatter is None:
        return None
    teff, logg, fe_h = (np.asarray(v, float) for v in (teff, logg, fe_h))
    frac = np.where(logg > SUBGIANT_LOGG, scatter["dwarf"], scatter["giant"])
    shifted = teff * (1.0 + frac * rng.normal(size=teff.shape))
    before, after = intrinsic_colours(teff, logg, fe_h), intrinsic_colours(shifted, logg, fe_h)
    return {k: np.asarray(after[k]) - np.asarray(before[k]) for k in COLOURS}


def combine(*offsets: dict | None) -> dict[str, np.ndarray] | None:
    """Sum of colour-offset dicts (None entries skipped; None when all are)."""
    present = [o for o in offsets if o is not None]
    if not present:
        return None
    return {k: sum(o[k] for o in present) for k in COLOURS}
