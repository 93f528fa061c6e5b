"""What the survey's calibration gets wrong: photometric zero points and the dust map.

Zero points: SDSS's photometric calibration is good to about 1% in g, r, i and 2% in u, z
(Padmanabhan et al. 2008, ApJ 674, 1217, "ubercalibration": 1% in griz, 2% in u; Ivezic et al.
2004, AN 325, 583: zero-point errors up to 0.02 mag in z). Each synthetic field is given its own error, drawn once per band: the real sample's stars
come from fields spread over hundreds of runs, so the errors act as star-to-star noise between
fields, not as one offset of the whole sample.

Dust map: the catalogue's extinction columns come from the Schlegel, Finkbeiner & Davis (1998)
E(B-V) map, whose values are accurate to about 16% (their abstract). The catalogue's E(B-V) is
the true one times (1 + 0.16 N(0, 1)), one draw per field (the map's 6.1' resolution is about a
field's size). The Schlafly & Finkbeiner (2011) recalibration is already inside the extinction
coefficients (:data:`stellarexp.sdss.EXTINCTION_COEFF`) and is not applied again.
"""

from __future__ import annotations

import numpy as np

from stellarexp.sdss import BANDS

# defaults; the survey's config (stellarexp/conf/data/synthetic.yaml) is the one source a run uses
ZERO_POINT_SIGMA: dict[str, float] = {"u": 0.02, "g": 0.01, "r": 0.01, "i": 0.01, "z": 0.02}
EBV_MAP_FRACTIONAL_ERROR = 0.16


def zero_point_offsets(rng, sigma: dict[str, float] | None = None) -> dict[str, float]:
    """Magnitude offsets of one field's calibration, per band (measured = true + offset).

    Parameters
    ----------
    rng : numpy.random.Generator
    sigma : dict, optional
        1-sigma error per band (mag); default :data:`ZERO_POINT_SIGMA`. Bands left out get none.

    Returns
    -------
    dict
        Band -> offset (mag).
    """
    sigma = ZERO_POINT_SIGMA if sigma is None else sigma
    out = {}
    for b in BANDS:
        s = float(sigma.get(b, 0.0))
        if not np.isfinite(s) or s < 0:
            raise ValueError(f"zero_point_sigma.{b} must be a finite number >= 0, got {sigma.get(b)!r}")
        out[b] = float(rng.normal(0.0, s)) if s > 0 else 0.0
    return out


def flux_factor(offset_mag: float) -> float:
    """Factor a flux is multiplied by when its calibration is off by ``offset_mag``."""
    return float(10.0 ** (-0.4 * offset_mag))


def map_ebv(ebv, rng, fractional_error: float = EBV_MAP_FRACTIONAL_ERROR):
    """The dust map's E(B-V) for a sight line whose true value is ``ebv``: one draw, never < 0.

    Parameters
    ----------
    ebv : float or array_like
        True E(B-V) (mag), shared by the stars of a field.
    rng : numpy.random.Generator
    fractional_error : float
        1-sigma error as a fraction of E(B-V).

    Returns
    -------
    float or numpy.ndarray
        Same shape as ``ebv``.
    """
    if not np.isfinite(fractional_error) or fractional_error < 0:
        raise ValueError(f"ebv_map_error must be a finite fraction >= 0, got {fractional_error!r}")
    factor = max(0.0, 1.0 + fractional_error * float(rng.normal()))
    return np.asarray(ebv, float) * factor if np.ndim(ebv) else float(ebv) * factor
