"""The main sequence of G, K and M dwarfs: Teff, mass and radius by spectral type.

Rows G0V-M6V of Pecaut & Mamajek (2013, ApJS 208, 9), "A Modern Mean Dwarf Stellar Color and
Effective Temperature Sequence", online table ``EEM_dwarf_UBVIJHK_colors_Teff.txt`` version
2021.03.02 (columns SpT, Teff, Msun, R_Rsun). The simulator uses it for the masses of dwarfs
(:func:`stellarexp.survey.magnitudes.stellar_mass`), the labels of K and M dwarfs
(:mod:`stellarexp.survey.cool_dwarfs`) and unresolved companions
(:mod:`stellarexp.survey.binaries`). Surface gravity follows from mass and radius,
logg = 4.438 + log10(M / Msun) - 2 log10(R / Rsun).
"""

from __future__ import annotations

import numpy as np

#: (spectral type, Teff K, mass Msun, radius Rsun), hottest first.
PECAUT_MAMAJEK_DWARFS: tuple[tuple[str, float, float, float], ...] = (
    ("G0V", 5930, 1.06, 1.100), ("G2V", 5770, 1.00, 1.012), ("G5V", 5660, 0.98, 0.977),
    ("G8V", 5480, 0.94, 0.914), ("K0V", 5270, 0.88, 0.813), ("K2V", 5100, 0.82, 0.783),
    ("K3V", 4830, 0.78, 0.755), ("K4V", 4600, 0.73, 0.713), ("K5V", 4440, 0.70, 0.701),
    ("K6V", 4300, 0.69, 0.669), ("K7V", 4100, 0.64, 0.630), ("K8V", 3990, 0.62, 0.615),
    ("K9V", 3930, 0.59, 0.608), ("M0V", 3850, 0.57, 0.588), ("M0.5V", 3770, 0.54, 0.544),
    ("M1V", 3660, 0.50, 0.501), ("M1.5V", 3620, 0.47, 0.482), ("M2V", 3560, 0.44, 0.446),
    ("M2.5V", 3470, 0.40, 0.421), ("M3V", 3430, 0.37, 0.361), ("M3.5V", 3270, 0.27, 0.300),
    ("M4V", 3210, 0.23, 0.274), ("M4.5V", 3110, 0.184, 0.217), ("M5V", 3060, 0.162, 0.196),
    ("M5.5V", 2930, 0.123, 0.156), ("M6V", 2810, 0.102, 0.137),
)
LOGG_SUN = 4.438
_TEFF = np.array([r[1] for r in PECAUT_MAMAJEK_DWARFS], float)[::-1]  # ascending
_LOG_MASS = np.log10([r[2] for r in PECAUT_MAMAJEK_DWARFS])[::-1]
_LOG_RADIUS = np.log10([r[3] for r in PECAUT_MAMAJEK_DWARFS])[::-1]
MASS_RANGE: tuple[float, float] = (float(10 ** _LOG_MASS[0]), float(10 ** _LOG_MASS[-1]))
TEFF_RANGE: tuple[float, float] = (float(_TEFF[0]), float(_TEFF[-1]))


def mass_from_teff(teff) -> np.ndarray:
    """Main-sequence mass (Msun) at a Teff (K), interpolated in log mass; clamped to the table."""
    return 10.0 ** np.interp(np.asarray(teff, float), _TEFF, _LOG_MASS)


def teff_from_mass(mass) -> np.ndarray:
    """Main-sequence Teff (K) of a mass (Msun), interpolated in log mass; clamped to the table."""
    return np.interp(np.log10(np.asarray(mass, float)), _LOG_MASS, _TEFF)


def logg_from_mass(mass) -> np.ndarray:
    """Main-sequence surface gravity (cgs dex) of a mass (Msun), from the table's radius."""
    logm = np.clip(np.log10(np.asarray(mass, float)), _LOG_MASS[0], _LOG_MASS[-1])
    return LOGG_SUN + logm - 2.0 * np.interp(logm, _LOG_MASS, _LOG_RADIUS)
