"""Late-G, K and M dwarfs: the stars the APOGEE label sample lacks, and how many join the survey.

The packaged APOGEE DR17 labels hold almost no dwarf cooler than 5,500 K (2 under 4,000 K),
yet a high-latitude SDSS x APOGEE sample is rich in them: APOGEE's colour cut (J-Ks)_0 >= 0.5
keeps K and M dwarfs, and at r > 14 the nearby dwarfs are as bright as distant giants.

Labels: masses from the Chabrier (2003, PASP 115, 763) system mass function, log-normal in
mass with m_c = 0.22 Msun and sigma = 0.57 dex below 1 Msun (the system function, not the
single-star one: each drawn star is the primary of its system, and its companions are added by
:mod:`~stellarexp.survey.binaries`), between the lightest star of the Pecaut & Mamajek (2013)
sequence and ``MAX_MASS``; Teff and logg from that sequence
(:mod:`~stellarexp.survey.dwarf_sequence`); [Fe/H] resampled from the APOGEE dwarfs of the
footprint (disc stars). These describe every star of a volume, so the survey's selection
(:func:`~stellarexp.survey.population.draw_labelled_stars` with ``volume_complete=True``) sets
which of them an r- and H-limited sample holds.

How many: the paper's two-stage logg figures fix its sample's dwarf share (see
:func:`paper_dwarf_share`), and each field's labelled stars are topped up with cool dwarfs
until that share is reached (:func:`cool_dwarf_count`).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from scipy.stats import truncnorm

from stellarexp.constants import LOGG_THRESHOLD
from stellarexp.survey import dwarf_sequence
from stellarexp.survey.labels import apogee_arrays

CHABRIER_LOG_MC = np.log10(0.22)  # Chabrier (2003), system mass function, m < 1 Msun
CHABRIER_SIGMA = 0.57
# Msun: G8V (5,480 K). Cooler than 5,500 K the APOGEE labels hold almost no dwarfs (21 of the
# 1,885 logg > 4 stars at |b| >= 30 deg), so the added dwarfs start where theirs stop.
MAX_MASS = 0.94
POOL_SIZE = 20_000
POOL_SEED = 2003
DWARF_LOGG = LOGG_THRESHOLD  # the paper's split between its two logg groups


def cool_dwarf_labels(n: int, rng, fe_h_pool) -> pd.DataFrame:
    """Labels of ``n`` K/M dwarfs of a volume: Chabrier (2003) system masses on the dwarf sequence.

    Parameters
    ----------
    n : int
    rng : numpy.random.Generator or int
    fe_h_pool : array_like
        [Fe/H] values resampled for the stars.

    Returns
    -------
    pandas.DataFrame
        ``teff``, ``logg``, ``fe_h``, ``mass``.
    """
    rng = np.random.default_rng(rng)
    fe_h_pool = np.asarray(fe_h_pool, float)
    fe_h_pool = fe_h_pool[np.isfinite(fe_h_pool)]
    if fe_h_pool.size == 0:
        raise ValueError("fe_h_pool holds no finite [Fe/H]")
    lo, hi = np.log10(dwarf_sequence.MASS_RANGE[0]), np.log10(MAX_MASS)
    a, b = (lo - CHABRIER_LOG_MC) / CHABRIER_SIGMA, (hi - CHABRIER_LOG_MC) / CHABRIER_SIGMA
    logm = truncnorm.rvs(a, b, loc=CHABRIER_LOG_MC, scale=CHABRIER_SIGMA, size=n, random_state=rng)
    mass = 10.0**logm
    return pd.DataFrame({"teff": dwarf_sequence.teff_from_mass(mass), "logg": dwarf_sequence.logg_from_mass(mass),
                         "fe_h": rng.choice(fe_h_pool, size=n), "mass": mass})


@functools.lru_cache(maxsize=1)
def packaged_pool() -> pd.DataFrame:
    """A fixed pool of cool-dwarf labels, [Fe/H] from the APOGEE dwarfs at |b| >= 30 deg."""
    arr = apogee_arrays()
    dwarfs = (arr["logg"] > DWARF_LOGG) & (np.abs(arr["glat"]) >= 30.0)
    return cool_dwarf_labels(POOL_SIZE, POOL_SEED, arr["fe_h"][dwarfs])


def paper_dwarf_share(sigma_all: float = 0.41, sigma_dwarfs: float = 0.052, sigma_giants: float = 0.544) -> float:
    """The dwarf share f of the paper's sample from its two-stage logg scatter.

    Wu et al. (2023, section 4) report sigma(logg) = 0.052 dex for logg > 4 and 0.544 dex for
    logg < 4, and 0.41 dex over the whole validation set, so
    sigma_all^2 = f sigma_dwarfs^2 + (1 - f) sigma_giants^2 (their 98.29% classifier leaves few
    stars in the wrong group), i.e. f = 0.44.
    """
    f = (sigma_giants**2 - sigma_all**2) / (sigma_giants**2 - sigma_dwarfs**2)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"no dwarf share in [0, 1] matches these scatters (got {f:.3f})")
    return float(f)


def cool_dwarf_count(n: int, logg, dwarf_share: float) -> int:
    """How many of ``n`` labelled stars must be cool dwarfs for the sample to reach ``dwarf_share``.

    ``logg`` are the gravities of ``n`` stars drawn without cool dwarfs; with ``k`` of them
    replaced by cool dwarfs the share becomes ``k/n + (1 - k/n) s``, ``s`` their own share.
    """
    if not 0.0 <= dwarf_share < 1.0:
        raise ValueError(f"dwarf_share must lie in [0, 1), got {dwarf_share!r}")
    s = float(np.mean(np.asarray(logg, float) > DWARF_LOGG)) if n else 0.0
    if s >= dwarf_share or s >= 1.0:
        return 0
    return round(n * (dwarf_share - s) / (1.0 - s))
