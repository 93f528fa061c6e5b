"""Where the survey's stars are: a Galactic number-density model (distances) and dust."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GalaxyModel:
    """Star number density along high-latitude sight lines (rounded Juric et al. 2008 form).

    Thin and thick exponential discs plus a flattened power-law halo, averaged over the
    sky with ``|b| >= b_min_deg`` (weights cos b) and all longitudes. Lengths in pc.
    """

    r_sun: float = 8000.0
    thin_height: float = 300.0
    thin_length: float = 2600.0
    thick_height: float = 900.0
    thick_length: float = 3600.0
    thick_fraction: float = 0.12
    halo_fraction: float = 0.005
    halo_power: float = 2.8
    halo_flattening: float = 0.64
    b_min_deg: float = 30.0
    d_min_pc: float = 3.0
    d_max_pc: float = 300_000.0

    def density(self, d_pc, l_deg, b_deg):
        """Relative number density at distance d along (l, b); the thin disc is 1 at the Sun."""
        d = np.asarray(d_pc, dtype=float)
        l_rad, b_rad = np.radians(l_deg), np.radians(b_deg)
        x = self.r_sun - d * np.cos(b_rad) * np.cos(l_rad)
        y = d * np.cos(b_rad) * np.sin(l_rad)
        z = np.abs(d * np.sin(b_rad))
        r = np.hypot(x, y)
        thin = np.exp(-(r - self.r_sun) / self.thin_length - z / self.thin_height)
        thick = self.thick_fraction * np.exp(-(r - self.r_sun) / self.thick_length - z / self.thick_height)
        r_halo = np.sqrt(r**2 + (z / self.halo_flattening) ** 2)
        halo = self.halo_fraction * (self.r_sun / r_halo) ** self.halo_power
        return thin + thick + halo

    def distance_cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """Sky-averaged cumulative distribution of distance, on a log10(d) grid.

        Returns
        -------
        log_d, cdf : numpy.ndarray
            Read-only; ``cdf`` is strictly increasing from 0 to 1.
        """
        return _distance_cdf(self)


@functools.lru_cache(maxsize=8)
def _distance_cdf(model: GalaxyModel) -> tuple[np.ndarray, np.ndarray]:
    log_d = np.linspace(np.log10(model.d_min_pc), np.log10(model.d_max_pc), 1201)
    b = np.linspace(model.b_min_deg, 90.0, 13)[:, None, None]
    l_deg = np.linspace(0.0, 360.0, 24, endpoint=False)[None, :, None]
    d = 10.0 ** log_d[None, None, :]
    w_b = np.cos(np.radians(b)) + 1e-3  # solid-angle weight; keep the pole in the average
    rho = (model.density(d, l_deg, b) * w_b).sum(axis=(0, 1)) / (w_b.sum() * l_deg.size)
    pdf = 10.0 ** (3 * log_d) * rho  # dN/dlog d ~ d^3 rho
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(log_d))])
    cdf = cdf / cdf[-1] + np.arange(cdf.size) * 1e-15  # strictly increasing for inversion
    cdf /= cdf[-1]
    log_d.flags.writeable = False
    cdf.flags.writeable = False
    return log_d, cdf


def draw_ebv(n: int, rng, *, ebv_scale: float = 0.03, ebv_sigma: float = 0.5, ebv=None):
    """Draw E(B-V) values typical of high Galactic latitude.

    Parameters
    ----------
    n : int
    rng : numpy.random.Generator
    ebv_scale : float
        Median E(B-V) (mag) of a log-normal; 0 gives no reddening.
    ebv_sigma : float
        Width of the log-normal in natural log units.
    ebv : float, optional
        If given, every star gets this value (e.g. one sight line per field).

    Returns
    -------
    numpy.ndarray
    """
    if ebv is not None:
        if not np.isfinite(ebv) or ebv < 0:
            raise ValueError(f"ebv must be a finite value >= 0, got {ebv!r}")
        return np.full(n, float(ebv))
    if not np.isfinite(ebv_scale) or ebv_scale < 0:
        raise ValueError(f"ebv_scale must be >= 0, got {ebv_scale!r}")
    if not np.isfinite(ebv_sigma) or ebv_sigma < 0:
        raise ValueError(f"ebv_sigma must be >= 0, got {ebv_sigma!r}")
    return ebv_scale * np.exp(ebv_sigma * rng.normal(size=n))
