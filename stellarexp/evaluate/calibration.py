"""Recalibration of predicted uncertainties, fitted on validation data.

The paper's head-only Bayesian spread is only *relative* (its Table 1: a 5 K spread beside a
172 K sigma): it ranks stars by difficulty but its intervals are far too narrow. A
:class:`Recalibration` maps the raw predictive std of each target to a calibrated one, so that
intervals reach their nominal coverage on unseen data. It never moves the mean.

Methods (``fit_recalibration(method=...)``):

``variance``
    One scale ``s_t`` per target, the maximum-likelihood value under a Gaussian likelihood
    ``y ~ N(mean, (s_t std)^2)``: ``s_t^2 = mean(((y - mean) / std)^2)`` over the validation
    stars. Intervals are Gaussian: ``mean +- z_level s_t std``.
``conformal``
    Split conformal prediction with the normalised score ``|y - mean| / std``. The interval at
    level ``a`` is ``mean +- q_a std`` with ``q_a`` the ``ceil((n + 1) a)``-th smallest of the
    ``n`` validation scores (infinite when that exceeds ``n``): finite-sample marginal coverage
    ``>= a`` for exchangeable data. The sorted scores are stored, so any level can be asked for;
    :meth:`Recalibration.std` returns ``std q_level / z_level`` (the Gaussian std whose interval
    at the fitted ``level`` is the conformal one).
``none``
    Identity (scale 1): the raw spread, stored so that consumers need no special case.

All arrays are ``[N, T]`` in physical units, columns in the order of ``targets``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

METHODS = ("variance", "conformal", "none")
VERSION = 1
MAX_STORED_SCORES = 10_000
"""Above this many validation stars a conformal fit stores this many score quantiles instead of
every score (the finite-sample correction still uses the true count)."""


def recalibration_settings(cfg) -> tuple[str, float]:
    """``(method, level)`` from ``stage.recalibration`` (``stellarexp/conf/stage/head.yaml``,
    which the logg stages inherit)."""
    rcfg = cfg.stage.recalibration
    method = str(rcfg.method or "none")
    level = float(rcfg.level)
    if method not in METHODS:
        raise ValueError(f"stage.recalibration.method must be one of {METHODS}, got {method!r}")
    return method, level


def z_value(level: float) -> float:
    """Half-width in standard deviations of the central Gaussian interval of ``level``."""
    _check_level(level)
    return float(norm.ppf(0.5 + level / 2.0))


def _check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _as_2d(name: str, x, n_targets: int) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1 and n_targets == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[1] != n_targets:
        raise ValueError(f"{name} must be [N, {n_targets}] (one column per target), "
                         f"got shape {a.shape}")
    return a


def conformal_quantile(scores, level: float, n: int | None = None) -> float:
    """Split-conformal quantile: the ``ceil((n + 1) level)``-th smallest score (``inf`` if > n).

    Parameters
    ----------
    scores : array_like
        Sorted or not; the validation scores (or stored quantiles of them).
    level : float
        Nominal coverage in (0, 1).
    n : int, optional
        Number of validation stars behind ``scores`` (default: ``len(scores)``).
    """
    _check_level(level)
    s = np.sort(np.asarray(scores, dtype=float))
    n = len(s) if n is None else int(n)
    if n == 0 or len(s) == 0:
        return math.inf
    k = math.ceil((n + 1) * level)
    if k > n:
        return math.inf
    if len(s) == n:
        return float(s[k - 1])
    return float(np.quantile(s, k / n, method="inverted_cdf"))


@dataclass
class Recalibration:
    """A fitted recalibration (see the module docstring); build with :func:`fit_recalibration`.

    Attributes
    ----------
    targets : list of str
    method : {"variance", "conformal", "none"}
    level : float
        The level the fit was made for (conformal: the level of :meth:`std`).
    scale : numpy.ndarray ``[T]``
        Factor applied to the raw std per target.
    n : list of int
        Validation stars used per target.
    scores : list of list of float, optional
        Conformal only: sorted normalised scores (or their quantiles) per target.
    """

    targets: list[str]
    method: str = "none"
    level: float = 0.95
    scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    n: list[int] = field(default_factory=list)
    scores: list[list[float]] | None = None

    def __post_init__(self):
        self.targets = [str(t) for t in self.targets]
        if self.method not in METHODS:
            raise ValueError(f"recalibration method must be one of {METHODS}, got {self.method!r}")
        self.scale = np.asarray(self.scale, dtype=float).reshape(-1)
        if self.scale.size == 0:
            self.scale = np.ones(len(self.targets))
        if self.scale.shape != (len(self.targets),):
            raise ValueError(f"scale has {self.scale.size} values for {len(self.targets)} targets")
        if not self.n:
            self.n = [0] * len(self.targets)
        _check_level(self.level)

    def std(self, std) -> np.ndarray:
        """Calibrated std ``[N, T]`` of raw predictive std ``[N, T]``."""
        s = _as_2d("std", std, len(self.targets))
        return s * self.scale[None, :]

    def half_width(self, level: float = 0.95) -> np.ndarray:
        """Interval half-width per unit of raw std, per target ``[T]``."""
        _check_level(level)
        if self.method == "conformal":
            return np.array([conformal_quantile(s, level, n)
                             for s, n in zip(self.scores or [], self.n)], dtype=float)
        return self.scale * z_value(level)

    def interval(self, mean, std, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated central interval ``(lo, hi)``, each ``[N, T]``, at ``level``."""
        m = _as_2d("mean", mean, len(self.targets))
        s = _as_2d("std", std, len(self.targets))
        if m.shape != s.shape:
            raise ValueError(f"mean {m.shape} and std {s.shape} differ in shape")
        h = self.half_width(level)[None, :] * s
        return m - h, m + h

    def to_dict(self) -> dict:
        """JSON-serialisable state (the ``recalibration.json`` artifact)."""
        out = {"version": VERSION, "method": self.method, "level": float(self.level),
               "targets": list(self.targets), "scale": [float(v) for v in self.scale],
               "n": [int(v) for v in self.n]}
        if self.scores is not None:
            out["scores"] = [[float(v) for v in s] for s in self.scores]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Recalibration:
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in ("method", "targets", "scale") if k not in d]
        if missing:
            raise ValueError(f"recalibration state lacks {missing}; is it a recalibration.json?")
        if int(d.get("version", VERSION)) > VERSION:
            raise ValueError(f"recalibration.json version {d['version']} is newer than this "
                             f"stellarexp understands ({VERSION}); upgrade stellarexp")
        if d["method"] == "conformal" and not d.get("scores"):
            raise ValueError("conformal recalibration state lacks its 'scores'")
        return cls(targets=list(d["targets"]), method=str(d["method"]),
                   level=float(d.get("level", 0.95)), scale=np.asarray(d["scale"], float),
                   n=[int(v) for v in d.get("n", [])], scores=d.get("scores"))


def _store(scores: np.ndarray) -> list[float]:
    s = np.sort(scores)
    if s.size > MAX_STORED_SCORES:
        s = np.quantile(s, np.linspace(0.0, 1.0, MAX_STORED_SCORES), method="inverted_cdf")
    return [float(v) for v in s]


def fit_recalibration(mean, std, y, targets, method: str = "variance",
                      level: float = 0.95) -> Recalibration:
    """Fit a :class:`Recalibration` on validation predictions.

    Parameters
    ----------
    mean, std, y : array_like ``[N, T]``
        Predicted mean, raw predictive std and labels, physical units. Stars with a non-finite
        value or ``std <= 0`` are left out per target.
    targets : sequence of str
        Column names, ``T`` of them.
    method : {"variance", "conformal", "none"}
    level : float
        Conformal: the coverage that :meth:`Recalibration.std` is matched to. Stored for all.

    Raises
    ------
    ValueError
        Unknown method, shapes that do not match, or a target without usable stars.
    """
    targets = [str(t) for t in targets]
    if method not in METHODS:
        raise ValueError(f"recalibration method must be one of {METHODS}, got {method!r}")
    _check_level(level)
    m, s, t = (_as_2d(k, v, len(targets)) for k, v in (("mean", mean), ("std", std), ("y", y)))
    if not m.shape == s.shape == t.shape:
        raise ValueError(f"mean {m.shape}, std {s.shape} and y {t.shape} differ in shape")
    scale, counts, stored = [], [], []
    for j, name in enumerate(targets):
        ok = np.isfinite(m[:, j]) & np.isfinite(s[:, j]) & np.isfinite(t[:, j]) & (s[:, j] > 0)
        counts.append(int(ok.sum()))
        if method == "none":
            scale.append(1.0)
            continue
        if not ok.any():
            raise ValueError(f"cannot fit the {method} recalibration of {name!r}: no validation "
                             "star has a finite prediction, a positive std and a label")
        z = (t[ok, j] - m[ok, j]) / s[ok, j]
        if method == "variance":
            scale.append(float(np.sqrt(np.mean(z * z))))
        else:
            scores = np.abs(z)
            stored.append(_store(scores))
            scale.append(conformal_quantile(scores, level) / z_value(level))
    return Recalibration(targets=targets, method=method, level=float(level),
                         scale=np.asarray(scale, float), n=counts,
                         scores=stored if method == "conformal" else None)
