"""Figures of out-of-sample uncertainty scores (:mod:`stellarexp.evaluate.out_of_sample`).

:func:`reliability_figure`
    observed coverage of the central interval against its nominal level, one panel per label:
    a calibrated predictive lies on the diagonal, the shaded band is the binomial 95% range for
    the stars scored.
:func:`error_vs_std_figure`
    RMS error in bins of equal counts of predicted std, against the bins' mean std: a spread
    that ranks errors rises, a calibrated one lies on the diagonal; against the labels and,
    where the dataset has it, the noise-free truth.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

from stellarexp.evaluate.figures import _label, _plt, _save


def reliability_figure(curves: dict[str, dict[str, np.ndarray]], levels, n_stars: dict[str, int],
                       path, *, title: str = ""):
    """Reliability diagram: ``curves[label][name]`` = observed coverage at ``levels``."""
    plt = _plt()
    levels = np.asarray(levels, float)
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.0), squeeze=False)
    for ax, (label, by_name) in zip(axes[0], curves.items()):
        n = max(int(n_stars.get(label, 0)), 1)
        lo, hi = binom.interval(0.95, n, levels)
        ax.fill_between(levels, lo / n, hi / n, color="0.85", label=f"binomial 95% ({n} stars)")
        ax.plot([0, 1], [0, 1], color="0.4", lw=0.8)
        for name, observed in by_name.items():
            ax.plot(levels, observed, marker="o", ms=3, label=name)
        ax.set_xlabel("nominal coverage")
        ax.set_ylabel("observed coverage")
        ax.set_title(_label(label))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def error_vs_std_figure(bins: dict[str, dict[str, dict[str, np.ndarray]]], path, *,
                        title: str = ""):
    """``bins[label][against]`` = :func:`~stellarexp.evaluate.out_of_sample.binned_errors`."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(bins), figsize=(4.2 * len(bins), 4.0), squeeze=False)
    for ax, (label, by_ref) in zip(axes[0], bins.items()):
        top = 0.0
        for against, b in by_ref.items():
            if len(b["std"]):
                ax.plot(b["std"], b["rmse"], marker="o", ms=3, label=f"RMS error vs {against}")
                top = max(top, float(np.max(b["std"])), float(np.max(b["rmse"])))
        ax.plot([0, top], [0, top], color="0.4", lw=0.8, label="calibrated")
        ax.set_xlabel(_label(label, "predicted std"))
        ax.set_ylabel(_label(label, "RMS error"))
        ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
