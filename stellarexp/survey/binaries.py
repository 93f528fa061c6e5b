"""Unresolved binaries: a main-sequence companion whose light adds to the labelled star's.

At the survey's distances (0.1-several kpc) SDSS's ~1.4" seeing leaves most companions
unresolved: the catalogue and the image see the sum of both stars' fluxes, while APOGEE's
labels describe the brighter one. Each dwarf (logg > ``DWARF_LOGG``) has a companion with the
multiplicity fraction of its mass class and a mass ratio q drawn from dN/dq ~ q^gamma between
``Q_MIN`` and 1, both from Duchene & Kraus (2013, ARA&A 51, 269, Table 1):

- solar-type primaries (0.7-1.3 Msun; used for every primary above 0.6 Msun): 44% multiple,
  gamma = 0.3 (Raghavan et al. 2010, ApJS 190, 1 find the same 44%, with q roughly flat);
- M dwarfs (0.1-0.5 Msun; every primary below 0.6 Msun): 26% multiple, gamma = 0.4.

``Q_MIN`` = 0.1 is the lower edge of the table's mass-ratio fits. The companion's Teff and
gravity follow its mass on the Pecaut & Mamajek (2013) sequence
(:mod:`~stellarexp.survey.dwarf_sequence`), with the primary's [Fe/H]. Giants get none: a
main-sequence companion of the same age is several magnitudes fainter and changes nothing.
"Dwarf" here means logg > 3.8, so slightly evolved F/G stars keep their companions too (the
paper's 4-dex split, used for the sample's dwarf share, is a different question). The fractions
count companions at all separations; at the survey's distances some wide pairs would be resolved
at SDSS's ~1.4" seeing, so the unresolved share is an upper limit. Companions heavier than the
sequence's G0V (1.06 Msun) are given G0V's Teff and radius.
"""

from __future__ import annotations

import numpy as np

from stellarexp.survey import dwarf_sequence

DWARF_LOGG = 3.8
MASS_CLASS_SPLIT = 0.6  # Msun: between the two mass classes of Duchene & Kraus (2013)
BINARY_FRACTION: dict[str, float] = {"solar": 0.44, "m_dwarf": 0.26}
MASS_RATIO_GAMMA: dict[str, float] = {"solar": 0.3, "m_dwarf": 0.4}
Q_MIN = 0.1


def draw_mass_ratio(n: int, rng, gamma: float, q_min: float = Q_MIN) -> np.ndarray:
    """Mass ratios from dN/dq ~ q^gamma on [q_min, 1] (inverse-CDF sampling)."""
    if not (0.0 < q_min < 1.0) or gamma <= -1.0:
        raise ValueError(f"need 0 < q_min < 1 and gamma > -1, got q_min={q_min!r}, gamma={gamma!r}")
    u = rng.random(n)
    a = gamma + 1.0
    return (q_min**a + u * (1.0 - q_min**a)) ** (1.0 / a)


def draw_companions(mass, logg, rng, *, fractions: dict[str, float] | None = None,
                    gammas: dict[str, float] | None = None) -> np.ndarray:
    """Companion masses (Msun; NaN where a star has none) of the labelled stars.

    Parameters
    ----------
    mass, logg : array_like
        Primary masses (Msun) and gravities (only dwarfs get companions).
    rng : numpy.random.Generator
    fractions, gammas : dict, optional
        Multiplicity fraction and mass-ratio power per class (``solar``, ``m_dwarf``);
        defaults :data:`BINARY_FRACTION` and :data:`MASS_RATIO_GAMMA`.

    Returns
    -------
    numpy.ndarray
        Companion mass, NaN for single stars and giants; never below the sequence's lightest star.
    """
    unknown = sorted(set(fractions or {}) - set(BINARY_FRACTION))
    if unknown:
        raise ValueError(f"binary_fraction names unknown mass class(es) {unknown}; use {sorted(BINARY_FRACTION)}")
    fractions = {**BINARY_FRACTION, **(fractions or {})}
    gammas = {**MASS_RATIO_GAMMA, **(gammas or {})}
    for name, f in fractions.items():
        if not 0.0 <= float(f) <= 1.0:
            raise ValueError(f"binary fraction of class {name!r} must lie in [0, 1], got {f!r}")
    mass = np.asarray(mass, float)
    logg = np.asarray(logg, float)
    n = mass.size
    cls_solar = mass >= MASS_CLASS_SPLIT
    frac = np.where(cls_solar, fractions["solar"], fractions["m_dwarf"])
    has = (logg > DWARF_LOGG) & (rng.random(n) < frac)
    q = np.where(cls_solar, draw_mass_ratio(n, rng, gammas["solar"]), draw_mass_ratio(n, rng, gammas["m_dwarf"]))
    m2 = np.maximum(q * mass, dwarf_sequence.MASS_RANGE[0])
    return np.where(has, m2, np.nan)


def combine_magnitudes(primary: dict, companion: dict, has_companion, bands) -> dict:
    """Magnitudes of the unresolved pair: fluxes added where there is a companion.

    A companion is never brighter than the primary in any band (its magnitude is capped at the
    primary's): the labels describe the brighter star, and a slightly evolved primary (label logg
    below its sequence value) would otherwise be outshone by a q ~ 1 companion on the sequence.

    Parameters
    ----------
    primary, companion : dict
        Band -> absolute magnitude arrays of the two stars.
    has_companion : array_like of bool
    bands : iterable of str

    Returns
    -------
    dict
        A copy of ``primary`` with the listed bands combined.
    """
    out = dict(primary)
    has = np.asarray(has_companion, bool)
    for b in bands:
        second = np.maximum(np.where(has, companion[b], 99.0), primary[b])
        both = -2.5 * np.log10(10.0 ** (-0.4 * primary[b]) + 10.0 ** (-0.4 * second))
        out[b] = np.where(has, both, primary[b])
    return out
