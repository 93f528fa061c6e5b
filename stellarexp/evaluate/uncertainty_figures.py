"""Figures of out-of-sample uncertainty scores (:mod:`stellarexp.evaluate.out_of_sample`).

:func:`reliability_figure`
    observed coverage of the central interval against its nominal level, one panel per label:
    a calibrated predictive lies on the diagonal, the shaded band is the binomial 95% range for
    the stars scored.
:func:`error_vs_std_figure`
    RMS error in bins of equal counts of predicted std, against the bins' mean std: a spread
    that ranks errors rises, a calibrated one lies on the diagonal; against the labels and,
    where the dataset has it, the noise-free truth.
:func:`methods_figure`
    the uncertainty methods of one backbone side by side (the report's methods table): NLL,
    95% coverage against its binomial range, rho against truth beside the ranking ceiling.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

from stellarexp.constants import PAPER_HEAD_METHOD
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


def methods_figure(frame, path, *, title: str = ""):
    """The uncertainty methods side by side (the report's methods table): one column per label,
    rows NLL, 95% coverage (the band: its binomial 95% range) and rho of ``|error against
    truth|`` with the std (open markers: the ranking ceiling). ``frame``: one row per method and
    label with ``nll``, ``coverage95``, ``coverage95_lo/_hi``, ``spearman_truth``,
    ``ceiling_rho`` (:func:`stellarexp.tracking.uncertainty_methods.compare_methods`)."""
    plt = _plt()
    labels = list(dict.fromkeys(frame["label"]))
    methods = sorted(dict.fromkeys(frame["method"]),  # the paper's first, the selected last
                     key=lambda m: (m != PAPER_HEAD_METHOD, m == "selected", m))
    x = np.arange(len(methods))
    rows = (("nll", "NLL (lower is better)"), ("coverage95", "95% coverage"),
            ("spearman_truth", "rho |error vs truth|, std"))
    fig, axes = plt.subplots(len(rows), len(labels), figsize=(3.6 * len(labels), 8.0),
                             squeeze=False, sharex=True)
    for j, label in enumerate(labels):
        part = frame[frame["label"] == label].set_index("method").reindex(methods)
        for i, (key, name) in enumerate(rows):
            ax = axes[i][j]
            if key == "coverage95":
                band = part.reindex(columns=["coverage95_lo", "coverage95_hi"]).to_numpy(float)
                if np.isfinite(band).any():  # the methods' scored counts differ by a few at most
                    ax.axhspan(np.nanmin(band[:, 0]), np.nanmax(band[:, 1]), color="0.88",
                               label="binomial 95% range")
                ax.axhline(0.95, color="0.4", lw=0.8)
            ax.plot(x, part[key].to_numpy(float), "o", color="C0", label=name)
            if key == "spearman_truth" and "ceiling_rho" in part:
                ax.plot(x, part["ceiling_rho"].to_numpy(float), "o", mfc="none", color="C1",
                        label="ranking ceiling")
            if i == 0:
                ax.set_title(_label(label))
            if j == 0:
                ax.set_ylabel(name)
            if i == len(rows) - 1:
                ax.set_xticks(x, methods, rotation=45, ha="right", fontsize=8)
            if j == 0 and i > 0:
                ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
