"""Argument checks shared by the survey's draw functions (clear ``ValueError`` messages)."""

from __future__ import annotations

import numpy as np


def check_n(n) -> int:
    """Return ``n`` as an int, raising ``ValueError`` unless it is a positive integer."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


def check_r_range(r_range) -> tuple[float, float]:
    """Return ``(bright, faint)`` magnitudes, raising ``ValueError`` unless bright < faint."""
    try:
        lo, hi = (float(v) for v in r_range)
    except (TypeError, ValueError):
        raise ValueError(f"r_range must be a pair (bright, faint), got {r_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        raise ValueError(f"r_range must be (bright, faint) with bright < faint, got {r_range!r}")
    return lo, hi


def check_nonneg(name: str, value) -> float:
    """Return ``value`` as a float, raising ``ValueError`` (naming ``name``) unless finite and >= 0."""
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite value >= 0, got {value!r}")
    return value


def colour_scatter_draw(n: int, rng, sigma: float) -> dict[str, np.ndarray] | None:
    """Gaussian star-to-star offsets (mag) of u-g, g-r, r-i, i-z; None when ``sigma`` is 0."""
    if sigma == 0:
        return None
    return {k: rng.normal(0.0, sigma, n) for k in ("u_g", "g_r", "r_i", "i_z")}
