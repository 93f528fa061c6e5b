"""Figures of the realism report (matplotlib, Agg backend); each writes one PNG atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stellarexp import sdss
from stellarexp.io_utils import atomic_path
from stellarexp.survey.realism.locus import (
    DWARF_LOGG_MIN,
    FEH_EDGES,
    PRINCIPAL_COLOURS,
    principal_colour,
)
from stellarexp.survey.realism.noise import calibobj_magnitudes, error_curve


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def dwarf_locus_figure(sim: pd.DataFrame, real: pd.DataFrame, path, *, sample: str,
                       feh_edges=FEH_EDGES, logg_min: float = DWARF_LOGG_MIN) -> Path:
    """u-g, r-i and i-z against g-r per [Fe/H] bin: SSPP stars (grey) under simulated dwarfs,
    with running medians of both (lines)."""
    plt = _plt()
    dwarfs = sim[sim["logg"].to_numpy(float) > logg_min]
    nb = len(feh_edges) - 1
    fig, axes = plt.subplots(3, nb, figsize=(3.2 * nb, 7.6), sharex=True, sharey="row", squeeze=False)
    grid = np.arange(0.2, 1.25, 0.05)
    for k in range(nb):
        lo, hi = feh_edges[k], feh_edges[k + 1]
        s = dwarfs[(dwarfs["feh"] >= lo) & (dwarfs["feh"] < hi)]
        r = real[(real["feh"] >= lo) & (real["feh"] < hi)]
        for row, c in enumerate(("ug", "ri", "iz")):
            ax = axes[row, k]
            ax.scatter(r["gr"], r[c], s=2, c="0.6", lw=0, label=f"SSPP ({len(r)})")
            ax.scatter(s["gr"], s[c], s=3, c="tab:red", lw=0, alpha=0.6, label=f"{sample} dwarfs ({len(s)})")
            for df, colour in ((r, "k"), (s, "darkred")):
                idx = np.digitize(df["gr"], grid)
                med = [np.median(df[c][idx == i]) if (idx == i).sum() >= 10 else np.nan for i in range(1, len(grid))]
                ax.plot(0.5 * (grid[1:] + grid[:-1]), med, c=colour, lw=1.5)
            if row == 0:
                ax.set_title(f"[Fe/H] {lo:+.1f} to {hi:+.1f}", fontsize=9)
                ax.legend(fontsize=6, markerscale=3, loc="upper left")
            if k == 0:
                ax.set_ylabel({"ug": "u-g", "ri": "r-i", "iz": "i-z"}[c])
            if row == 2:
                ax.set_xlabel("g-r")
    axes[0, 0].set_xlim(0.1, 1.3)
    for row, lim in enumerate(((0.5, 3.0), (-0.2, 1.0), (-0.2, 0.6))):
        axes[row, 0].set_ylim(lim)
    fig.suptitle(f"Dwarf locus per [Fe/H]: {sample} (label logg > {logg_min}, dereddened) over SSPP stars",
                 fontsize=10)
    return _save(fig, path)


def photometric_error_figure(sim: pd.DataFrame, real: pd.DataFrame, path, *, sample: str,
                             twin: pd.DataFrame | None = None) -> Path:
    """PSF-magnitude error against magnitude per band: calibObj stars and the simulated
    catalogue, each with its binned median curve (:func:`~stellarexp.survey.realism.noise.error_curve`),
    and the median curve of the anchor's twin (its stars measured by the survey in its conditions)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(sdss.BANDS), figsize=(3.0 * len(sdss.BANDS), 3.2), squeeze=False)
    for ax, b in zip(axes[0], sdss.BANDS):
        m_r, e_r = calibobj_magnitudes(real, b)
        m_s, e_s = sim[f"psfmag_{b}"].to_numpy(float), sim[f"psfmagerr_{b}"].to_numpy(float)
        for m, e, colour, line, name in ((m_r, e_r, "0.6", "k", "calibObj"), (m_s, e_s, "tab:red", "darkred", sample)):
            ok = np.isfinite(m) & np.isfinite(e) & (e > 0)
            ax.scatter(m[ok], e[ok], s=2, c=colour, lw=0, label=f"{name} ({int(ok.sum())})")
            centres, med = error_curve(m, e)
            ax.plot(centres, med, c=line, lw=1.2)
        if twin is not None:
            centres, med = error_curve(twin[f"psfmag_{b}"], twin[f"psfmagerr_{b}"])
            ax.plot(centres, med, c="tab:blue", lw=1.2, ls="--", label="twin (anchor conditions)")
        ax.set_yscale("log")
        ax.set_xlim(13.5, 23.0)
        ax.set_ylim(0.005, 1.0)
        ax.set_xlabel(f"{b} (mag)")
        ax.legend(fontsize=6, markerscale=3)
    axes[0, 0].set_ylabel("PSF-magnitude error (mag)")
    fig.suptitle("Photometric errors: simulated catalogue and the anchor's twin against calibObj "
                 "(lines: median per 0.25 mag)",
                 fontsize=10)
    return _save(fig, path)


def locus_width_figure(sim: pd.DataFrame, real: pd.DataFrame, path, *, sample: str, r_range) -> Path:
    """Histograms of the principal colours w and y (Ivezic et al. 2004), simulated vs calibObj."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(PRINCIPAL_COLOURS), figsize=(4.2 * len(PRINCIPAL_COLOURS), 3.2), squeeze=False)
    bins = np.linspace(-0.25, 0.25, 51)
    for ax, name in zip(axes[0], PRINCIPAL_COLOURS):
        for df, colour, label in ((real, "0.4", "calibObj"), (sim, "tab:red", sample)):
            v, ok = principal_colour(df, name)
            ok &= (df["r"].to_numpy(float) >= r_range[0]) & (df["r"].to_numpy(float) <= r_range[1])
            ax.hist(v[ok], bins=bins, density=True, histtype="step", color=colour, lw=1.5,
                    label=f"{label} ({int(ok.sum())})")
        ax.set_xlabel(f"principal colour {name} (mag)")
        ax.legend(fontsize=7)
    span = f"r {r_range[0]:.1f}-{r_range[1]:.1f}" if r_range[0] > 0 else f"r <= {r_range[1]:.1f} (no common range)"
    fig.suptitle(f"Width of the stellar locus (Ivezic et al. 2004 principal colours), {span}", fontsize=10)
    return _save(fig, path)


def colour_transfer_figure(table: pd.DataFrame, path, *, sample: str) -> Path:
    """Predicted against SSPP [Fe/H]: the survey-trained model and the SSPP-trained one."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.8), sharex=True, sharey=True)
    lim = (float(table["feh"].min()) - 0.2, float(table["feh"].max()) + 0.2)
    for ax, col, title in ((axes[0], "pred_sim_trained", f"trained on {sample}"),
                           (axes[1], "pred_sspp_trained", "trained on SSPP (5-fold)")):
        resid = table[col] - table["feh"]
        ax.scatter(table["feh"], table[col], s=3, lw=0, c=table["gr"], cmap="viridis")
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_title(f"{title}: sigma {resid.std(ddof=0):.3f}, bias {resid.mean():+.3f}", fontsize=9)
        ax.set_xlabel("SSPP [Fe/H] (dex)")
    axes[0].set_ylabel("predicted [Fe/H] (dex)")
    axes[0].set_xlim(lim)
    axes[0].set_ylim(lim)
    return _save(fig, path)
