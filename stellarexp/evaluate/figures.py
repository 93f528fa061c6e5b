"""Figures of a run (matplotlib, Agg backend; nothing is shown on screen).

One function per figure of the paper (and the calibration curve it lacks); each takes plain
arrays, writes one PNG and returns its path, so stages log it with ``run.log_figure(path)``.

===========================  =======================================================
function                     figure
===========================  =======================================================
:func:`pred_vs_true`         Fig. 2/4: prediction vs label, coloured by KDE density,
                             residual panel below
:func:`label_plane`          Fig. 3: the Teff-logg label plane coloured by [Fe/H]
:func:`attention_figure`     Fig. 5: attention maps of the ConViT blocks
:func:`uncertainty_vs_label` Fig. 6: predictive std against the label
:func:`noise_figure`         Fig. 7: a cutout's g, r, i bands at each noise level
:func:`rotation_figure`      Fig. 8: prediction, 95% interval and std against angle
:func:`learning_curves`      Fig. 9: metric histories of MLflow runs
:func:`calibration_figure`   observed against nominal coverage, raw and recalibrated
===========================  =======================================================
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy.stats import gaussian_kde

from stellarexp.io_utils import atomic_path

UNITS = {"teff": "K", "logg": "dex", "fe_h": "dex"}
LABEL_TEX = {"teff": r"$T_\mathrm{eff}$", "logg": r"$\log g$", "fe_h": "[Fe/H]"}
log = logging.getLogger(__name__)
MAX_KDE_POINTS = 5000  # density of larger samples is evaluated from a subsample's KDE


def optional_figure(what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or ``None`` with a warning naming ``what`` when it fails: a
    figure must never fail the run that draws it."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001  (a figure must never fail the run)
        log.warning("figure %s skipped: %s: %s", what, type(exc).__name__, exc)
        return None


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _label(target: str, what: str = "") -> str:
    unit = UNITS.get(target, "")
    text = f"{what} {LABEL_TEX.get(target, target)}".strip()
    return f"{text} ({unit})" if unit else text


def point_density(x, y, seed: int = 0) -> np.ndarray:
    """Gaussian-KDE density at each point ``(x, y)`` (scipy), for colouring scatter plots.

    Returns ones when the points are too few or degenerate for a KDE.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 5 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.ones_like(x)
    xy = np.vstack([x, y])
    fit = xy
    if x.size > MAX_KDE_POINTS:
        fit = xy[:, np.random.default_rng(seed).choice(x.size, MAX_KDE_POINTS, replace=False)]
    try:
        return gaussian_kde(fit)(xy)
    except np.linalg.LinAlgError:  # points on a line: no 2-D density
        return np.ones_like(x)


def pred_vs_true(panels: dict[str, tuple[np.ndarray, np.ndarray]], path, *, title: str = "") -> Path:
    """Predicted-vs-label scatter coloured by KDE density, residual panel below (Fig. 2/4).

    Parameters
    ----------
    panels : dict
        Target name -> ``(y_true, y_pred)``; one column per target.
    path : path-like
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 5.2), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    for col, (target, (y_true, y_pred)) in enumerate(panels.items()):
        y_true = np.asarray(y_true, float)
        y_pred = np.asarray(y_pred, float)
        ok = np.isfinite(y_true) & np.isfinite(y_pred)
        t, p = y_true[ok], y_pred[ok]
        res = p - t
        dens = point_density(t, p)
        order = np.argsort(dens)  # densest points on top
        top, bottom = axes[0, col], axes[1, col]
        lo, hi = (np.min(np.r_[t, p]), np.max(np.r_[t, p])) if t.size else (0.0, 1.0)
        top.scatter(t[order], p[order], c=dens[order], s=5, lw=0, cmap="viridis")
        top.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        sigma = float(np.std(res)) if res.size else float("nan")
        unit = UNITS.get(target, "")
        top.set_title(f"{LABEL_TEX.get(target, target)}: $\\sigma$ = {sigma:.3g} {unit}",
                      fontsize=10)
        top.set_ylabel("predicted")
        top.tick_params(labelbottom=False)
        bottom.scatter(t[order], res[order], c=dens[order], s=5, lw=0, cmap="viridis")
        bottom.axhline(0.0, color="k", ls="--", lw=0.8)
        bottom.set_xlabel(f"label ({unit})" if unit else "label")
        bottom.set_ylabel("residual")
        bottom.sharex(top)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def uncertainty_vs_label(panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path, *,
                         title: str = "") -> Path:
    """Predictive std against the label, one column per target (Fig. 6).

    Parameters
    ----------
    panels : dict
        Target -> ``{series name: (y_true, std)}`` (e.g. ``raw`` and ``calibrated``); each
        series gets its own row, since the raw spread can be orders of magnitude smaller.
    """
    plt = _plt()
    n = len(panels)
    rows = max(len(series) for series in panels.values())
    fig, axes = plt.subplots(rows, n, figsize=(4.2 * n, 3.0 * rows), squeeze=False)
    for col, (target, series) in enumerate(panels.items()):
        for r, (name, (y, s)) in enumerate(series.items()):
            y, s = np.asarray(y, float), np.asarray(s, float)
            ok = np.isfinite(y) & np.isfinite(s)
            ax = axes[r, col]
            dens = point_density(y[ok], s[ok])
            order = np.argsort(dens)
            ax.scatter(y[ok][order], s[ok][order], c=dens[order], s=5, lw=0, cmap="viridis")
            ax.set_ylabel(f"{name} std ({UNITS.get(target, '')})")
            ax.set_xlabel(_label(target, "label"))
        axes[0, col].set_title(LABEL_TEX.get(target, target), fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def calibration_figure(curves: dict[str, dict[str, np.ndarray]], levels, path, *,
                       title: str = "") -> Path:
    """Observed against nominal coverage, one panel per target, one line per series.

    Parameters
    ----------
    curves : dict
        Target -> ``{series name: observed coverage per level}``.
    levels : array_like
        Nominal levels.
    """
    plt = _plt()
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    levels = np.asarray(levels, float)
    for col, (target, series) in enumerate(curves.items()):
        ax = axes[0, col]
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="ideal")
        for name, observed in series.items():
            ax.plot(levels, observed, marker="o", ms=3, label=name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("nominal coverage")
        ax.set_ylabel("observed coverage")
        ax.set_title(LABEL_TEX.get(target, target), fontsize=10)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def learning_curves(histories: dict[str, dict[str, list[tuple[int, float]]]], path, *,
                    title: str = "", marks: dict[str, list[int]] | None = None) -> Path:
    """Metric histories against the epoch, one panel per group (Fig. 9).

    Parameters
    ----------
    histories : dict
        Panel title -> ``{metric name: [(step, value), ...]}``.
    marks : dict, optional
        Label -> epochs drawn as vertical lines on every panel (e.g. the averaged epochs).
    """
    plt = _plt()
    n = max(1, len(histories))
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.4), squeeze=False)
    styles = [{"color": "0.6", "lw": 0.8, "ls": ":"}, {"color": "tab:red", "lw": 1.0, "ls": "--"}]
    for col, (group, series) in enumerate(histories.items()):
        ax = axes[0, col]
        for name, points in series.items():
            if points:
                steps, values = zip(*sorted(points))
                ax.plot(steps, values, label=name)
        for k, (label, epochs) in enumerate((marks or {}).items()):
            for i, epoch in enumerate(epochs):
                ax.axvline(epoch, label=label if i == 0 else None, **styles[k % len(styles)])
        ax.set_xlabel("epoch")
        ax.set_title(group, fontsize=10)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def run_histories(client, run_id: str, names) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` of the logged metrics ``names`` of an MLflow run."""
    out = {}
    for name in names:
        hist = client.get_metric_history(run_id, name)
        if hist:
            out[name] = [(int(m.step), float(m.value)) for m in hist]
    return out


def label_plane(teff, logg, fe_h, path, *, title: str = "") -> Path:
    """The Teff-logg plane of the labels coloured by [Fe/H] (Fig. 3), axes inverted as in an
    HR diagram."""
    plt = _plt()
    teff, logg, fe_h = (np.asarray(a, float) for a in (teff, logg, fe_h))
    ok = np.isfinite(teff) & np.isfinite(logg)
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    colour = np.where(np.isfinite(fe_h[ok]), fe_h[ok], np.nan)
    sc = ax.scatter(teff[ok], logg[ok], c=colour, s=4, lw=0, cmap="coolwarm")
    fig.colorbar(sc, ax=ax, label="[Fe/H] (dex)")
    ax.invert_xaxis()
    ax.invert_yaxis()
    ax.set_xlabel(_label("teff"))
    ax.set_ylabel(_label("logg"))
    ax.set_title(title or f"labels of {int(ok.sum())} stars", fontsize=10)
    return _save(fig, path)


def attention_figure(images, maps, path, *, block_names=None, band: int = 2,
                     titles=None) -> Path:
    """Attention maps of the ConViT blocks on example stars (Fig. 5).

    Parameters
    ----------
    images : array_like ``[S, 5, H, W]``
        The example cutouts (any stretch); ``band`` is drawn in the first column.
    maps : array_like ``[S, B, h, w]``
        Attention each patch receives, per block (from
        :func:`stellarexp.evaluate.attention.attention_maps`).
    """
    plt = _plt()
    images, maps = np.asarray(images, float), np.asarray(maps, float)
    s, b = maps.shape[:2]
    fig, axes = plt.subplots(s, b + 1, figsize=(1.9 * (b + 1), 1.9 * s), squeeze=False)
    h, w = images.shape[-2:]
    for i in range(s):
        axes[i, 0].imshow(images[i, band], cmap="gray", origin="lower")
        axes[i, 0].set_ylabel(titles[i] if titles else f"star {i}", fontsize=8)
        for k in range(b):
            # patch grid drawn over the cutout's extent, warmer = more attention
            axes[i, k + 1].imshow(maps[i, k], cmap="inferno", origin="lower",
                                  extent=(0, w, 0, h), interpolation="nearest")
            if i == 0:
                name = block_names[k] if block_names else f"block {k}"
                axes[i, k + 1].set_title(name, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("image (r)" if band == 2 else f"image (band {band})", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def noise_figure(images: dict[float, np.ndarray], path, *, bands=(1, 2, 3),
                 band_names="ugriz") -> Path:
    """A cutout at each noise level (Fig. 7): rows are levels, columns the noised bands.

    Parameters
    ----------
    images : dict
        ``eps`` -> image ``[5, H, W]`` (nanomaggies); ``0`` is the clean one.
    """
    plt = _plt()
    levels = sorted(images)
    fig, axes = plt.subplots(len(levels), len(bands), figsize=(2.0 * len(bands),
                                                                2.0 * len(levels)),
                             squeeze=False)
    for r, eps in enumerate(levels):
        img = np.asarray(images[eps], float)
        for c, b in enumerate(bands):
            ref = np.asarray(images[levels[0]], float)[b]
            vmin, vmax = np.percentile(ref, [1, 99.5])
            axes[r, c].imshow(np.arcsinh(img[b] / max(abs(vmax), 1e-12)), cmap="gray",
                              origin="lower", vmin=np.arcsinh(vmin / max(abs(vmax), 1e-12)),
                              vmax=np.arcsinh(1.0))
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(f"{band_names[b]} band", fontsize=9)
        axes[r, 0].set_ylabel(f"eps = {eps:g}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def shift_figure(table, path, *, title: str = "") -> Path:
    """Prediction shift and predictive std against the noise level, one column per target.

    ``table`` is the perturbation table (a DataFrame with ``target``, ``eps``,
    ``shift_mean``, ``shift_std``, ``std_mean`` columns).
    """
    plt = _plt()
    targets = list(dict.fromkeys(table["target"]))
    fig, axes = plt.subplots(2, len(targets), figsize=(3.8 * len(targets), 5.2), squeeze=False)
    for c, t in enumerate(targets):
        part = table[table["target"] == t].sort_values("eps")
        axes[0, c].errorbar(part["eps"], part["shift_mean"], yerr=part["shift_std"], marker="o",
                            capsize=3)
        axes[0, c].axhline(0.0, color="k", lw=0.6)
        axes[0, c].set_title(LABEL_TEX.get(t, t), fontsize=10)
        axes[0, c].set_ylabel(f"shift ({UNITS.get(t, '')})")
        axes[1, c].plot(part["eps"], part["std_mean"], marker="o", color="tab:green")
        axes[1, c].set_ylabel(f"mean std ({UNITS.get(t, '')})")
        axes[1, c].set_xlabel("eps (x robust pixel scatter)")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def rotation_figure(angles, stars: list[dict], path, *, title: str = "") -> Path:
    """Prediction with its 95% interval and the std against rotation angle (Fig. 8).

    Parameters
    ----------
    angles : array_like ``[A]``
        Degrees.
    stars : list of dict
        One panel each: ``target``, ``label`` (float), ``mean``, ``lo``, ``hi``, ``std`` (each
        ``[A]``), optional ``name``.
    """
    plt = _plt()
    angles = np.asarray(angles, float)
    fig, axes = plt.subplots(1, len(stars), figsize=(4.0 * len(stars), 3.4), squeeze=False)
    for ax, star in zip(axes[0], stars):
        t = star["target"]
        ax.fill_between(angles, star["lo"], star["hi"], color="tab:red", alpha=0.25,
                        label="95% interval")
        ax.plot(angles, star["mean"], color="tab:red", marker="o", ms=3, label="prediction")
        ax.axhline(star["label"], color="tab:blue", ls="--", label="label")
        ax.set_xlabel("rotation (deg)")
        ax.set_ylabel(_label(t))
        twin = ax.twinx()
        twin.plot(angles, star["std"], color="tab:green", marker="s", ms=3)
        twin.set_ylabel(f"std ({UNITS.get(t, '')})", color="tab:green")
        ax.set_title(star.get("name", ""), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
