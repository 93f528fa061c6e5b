"""The two-stage logg's combination of a dwarf head and a giant head (the paper's Eq. 20).

``hard``: ``c h1 + (1 - c) h2`` with ``c = [p > 0.5]``; the std and interval are the chosen
head's. ``soft``: the mixture ``p h1 + (1 - p) h2`` of the two predictive distributions (mean
``p m1 + (1 - p) m2``, variance ``p s1^2 + (1 - p) s2^2 + p (1 - p) (m1 - m2)^2``, interval from
mixture samples). Used by ``stage=logg_heads`` and by the packaged model.
"""

from __future__ import annotations

import numpy as np
import torch

from stellarexp.evaluate.mixture import Mixture


def combine(p, h1, h2, mode: str = "hard", generator=None):
    """Combine two heads' samples ``[S, B]`` with class-1 probabilities ``p`` ``[B]``.

    Returns
    -------
    dict
        ``mean``, ``std`` (formula of the module docstring), ``lo``, ``hi`` (2.5/97.5
        percentiles of the combined samples), each ``[B]``.
    """
    m1, m2 = h1.mean(0), h2.mean(0)
    v1, v2 = h1.var(0, unbiased=True), h2.var(0, unbiased=True)
    if mode == "hard":
        c = (p > 0.5).to(h1.dtype)
        samples = c * h1 + (1 - c) * h2
        mean, var = c * m1 + (1 - c) * m2, c * v1 + (1 - c) * v2
    elif mode == "soft":
        pick = torch.rand(h1.shape, generator=generator, dtype=h1.dtype) < p
        samples = torch.where(pick, h1, h2)
        mean = p * m1 + (1 - p) * m2
        var = p * v1 + (1 - p) * v2 + p * (1 - p) * (m1 - m2) ** 2
    else:
        raise ValueError(f"combine must be 'hard' or 'soft', got {mode!r}")
    q = torch.tensor([0.025, 0.975], dtype=h1.dtype)
    lo, hi = torch.quantile(samples, q, dim=0)
    return {"mean": mean, "std": var.clamp_min(0).sqrt(), "lo": lo, "hi": hi}


def two_stage_mixture(p, h1, h2) -> Mixture:
    """The two-stage predictive: ``p N(m1, s1^2) + (1 - p) N(m2, s2^2)``.

    Parameters
    ----------
    p : array_like ``[B]``
        The classifier's P(logg > threshold).
    h1, h2 : array_like ``[S, B]``
        Draws of the dwarf head (h1) and the giant head (h2), physical units.
    """
    h1, h2 = np.asarray(h1, float), np.asarray(h2, float)
    return Mixture.two_stage(p, (h1.mean(0), h1.std(0, ddof=1)), (h2.mean(0), h2.std(0, ddof=1)))
