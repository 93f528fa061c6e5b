"""Figures of a run (matplotlib, Agg backend; nothing is shown on screen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

UNITS = {"teff": "K", "logg": "dex", "fe_h": "dex"}
LABEL_TEX = {"teff": r"$T_\mathrm{eff}$", "logg": r"$\log g$", "fe_h": "[Fe/H]"}


def pred_vs_true(panels: dict[str, tuple[np.ndarray, np.ndarray]], path, *, title: str = "") -> Path:
    """Predicted-vs-label scatter with a residual panel below, one column per target.

    Parameters
    ----------
    panels : dict
        Target name -> ``(y_true, y_pred)``.
    path : path-like
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 5.2), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    for col, (target, (y_true, y_pred)) in enumerate(panels.items()):
        y_true = np.asarray(y_true, float)
        y_pred = np.asarray(y_pred, float)
        ok = np.isfinite(y_true) & np.isfinite(y_pred)
        t, p = y_true[ok], y_pred[ok]
        res = p - t
        top, bottom = axes[0, col], axes[1, col]
        lo, hi = (np.min(np.r_[t, p]), np.max(np.r_[t, p])) if t.size else (0.0, 1.0)
        top.scatter(t, p, s=4, alpha=0.5, lw=0)
        top.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        sigma = float(np.std(res)) if res.size else float("nan")
        unit = UNITS.get(target, "")
        top.set_title(f"{LABEL_TEX.get(target, target)}: $\\sigma$ = {sigma:.3g} {unit}", fontsize=10)
        top.set_ylabel("predicted")
        top.tick_params(labelbottom=False)
        bottom.scatter(t, res, s=4, alpha=0.5, lw=0)
        bottom.axhline(0.0, color="k", ls="--", lw=0.8)
        bottom.set_xlabel(f"label ({unit})" if unit else "label")
        bottom.set_ylabel("residual")
        bottom.sharex(top)
    if title:
        fig.suptitle(title, fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
