"""The survey's measurement applied to a drawn population without rendering it.

A draw of :func:`stellarexp.survey.population.draw_labelled_stars` holds true magnitudes. The
survey's catalogue reports them through three errors (docs/simulation.md, "Realism mechanisms"):
each field's zero points, the dust map's error in the extinction columns, and each star's
photometric error. :func:`measured_magnitudes` applies the same three to a draw, with the
photometric error taken from a catalogue's own error curve (median error per magnitude), so a
draw compared with real catalogue stars (the SEGUE-like draw against SSPP) carries the noise
real catalogue stars do.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from stellarexp.sdss import BANDS
from stellarexp.survey import calibration_errors


def measured_magnitudes(stars: pd.DataFrame, rng, *, error_curves: Mapping[str, tuple], zero_point_sigma: Mapping,
                        ebv_map_error: float, per_field: int) -> pd.DataFrame:
    """``mag_<b>`` and ``extinction_<b>`` of ``stars`` as the survey's catalogue would report them.

    Parameters
    ----------
    stars : pandas.DataFrame
        ``mag_<b>`` (true apparent, with dust), ``extinction_<b>`` and ``ebv`` per star.
    rng : numpy.random.Generator
    error_curves : mapping
        Band -> ``(magnitudes, median errors)`` of a catalogue; beyond its ends the end values hold.
    zero_point_sigma : mapping
        Band -> 1-sigma zero-point error (mag), one draw per group of ``per_field`` stars.
    ebv_map_error : float
        Fractional error of the catalogue's E(B-V), one draw per star (its own sight line).
    per_field : int
        Stars sharing a field's zero points.

    Returns
    -------
    pandas.DataFrame
        A copy of ``stars`` with measured ``mag_<b>`` and map ``extinction_<b>``.
    """
    out = stars.copy()
    n = len(out)
    fields = np.arange(n) // max(int(per_field), 1)
    offsets = [calibration_errors.zero_point_offsets(rng, dict(zero_point_sigma)) for _ in range(fields.max() + 1)] \
        if n else []
    ebv = out["ebv"].to_numpy(float)
    ebv_map = np.array([calibration_errors.map_ebv(e, rng, ebv_map_error) for e in ebv])
    for b in BANDS:
        mag = out[f"mag_{b}"].to_numpy(float)
        centres, errors = error_curves[b]
        sigma = np.interp(mag, centres, errors)
        zp = np.array([o.get(b, 0.0) for o in offsets])[fields] if n else np.zeros(0)
        out[f"mag_{b}"] = mag + zp + rng.normal(0.0, 1.0, n) * sigma
        coeff = out[f"extinction_{b}"].to_numpy(float) / np.where(ebv > 0, ebv, np.nan)
        out[f"extinction_{b}"] = np.where(ebv > 0, coeff * ebv_map, 0.0)
    return out
