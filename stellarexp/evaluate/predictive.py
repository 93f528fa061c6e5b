"""Evaluation of a Bayesian head's predictions: recalibration, uncertainty metrics, figures.

:func:`evaluate_predictive` is what ``stage=head`` and ``stage=logg_heads`` call once their
predictions exist. It

1. fits a :class:`~stellarexp.evaluate.calibration.Recalibration` on the validation predictions
   (``stage.recalibration.method``: ``variance`` | ``conformal`` | ``none``, ``.level``) and
   logs it as ``<artifact>/recalibration.json``;
2. returns the uncertainty metrics of every evaluated subset (val, and test under
   ``split=holdout``), raw and recalibrated in sample (``val/coverage95_raw_teff``,
   ``val/coverage95_cal_teff``, ``..._nll_..``, ``crps``, ``spearman``, ``width``), the logg
   subsets' residual metrics and coverage when logg labels are known, and ``recal/scale_<t>``;
3. scores the uncertainties out of sample (``oos/...``, :mod:`stellarexp.evaluate.scoring_run`):
   the recalibration fitted on other stars than those scored;
4. draws and logs the figures (``stage.figures``): prediction vs label, uncertainty vs label,
   calibration curve, learning curves, label plane.

A figure that cannot be drawn is skipped with a warning (the run still finishes).
"""

from __future__ import annotations

import json
import logging

import numpy as np

from stellarexp.data.dataset import eval_subset, read_stars
from stellarexp.evaluate import figures as fg
from stellarexp.evaluate.calibration import fit_recalibration, recalibration_settings
from stellarexp.evaluate.figures import optional_figure
from stellarexp.evaluate.metrics import (
    CALIBRATION_LEVELS,
    calibration_curve,
    metric_name,
    subset_regression_metrics,
    uncertainty_report,
)
from stellarexp.evaluate.out_of_sample import recalibration_factor
from stellarexp.evaluate.scoring_run import score_out_of_sample
from stellarexp.io_utils import atomic_path

log = logging.getLogger(__name__)


def fit_and_log_recalibration(cfg, run, targets, pred_val: dict, true_val, artifact: str):
    """Fit the configured recalibration on validation predictions and log it.

    A mixture predictive (``pred_val["mixture"]``, the two-stage logg) gets its factor on the
    components' std from :func:`stellarexp.evaluate.out_of_sample.recalibration_factor`
    (``variance``: maximum likelihood; ``conformal``: the smallest factor whose intervals hold
    the conformal count), which the packaged model applies to both components.

    Returns
    -------
    Recalibration
        The fitted one, or the identity (``none``) with a warning when a target cannot be
        fitted (no usable validation star); the tag ``recalibration`` says which.
    """
    method, level = recalibration_settings(cfg)
    try:
        recal = fit_recalibration(pred_val["mean"], pred_val["std"], true_val, targets,
                                  method=method, level=level)
        note = method
        if pred_val.get("mixture") is not None and method != "none":
            # a mixture's factor is on its components' std (the packaged model scales them), fitted
            # as the out-of-sample scoring fits it
            y = np.asarray(true_val, float)
            for j, mix in enumerate(pred_val["mixture"]):
                if mix is not None:
                    recal.scale[j] = recalibration_factor(mix, y[:, j], method, level)
    except ValueError as exc:
        log.warning("recalibration skipped: %s", exc)
        recal = fit_recalibration(pred_val["mean"], pred_val["std"], true_val, targets,
                                  method="none", level=level)
        note = f"none ({exc})"
    folder = run.output_dir / artifact
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recalibration.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(recal.to_dict(), indent=1))
    run.log_artifact(path, artifact)
    run.set_tags({"recalibration": note})
    return recal


def evaluate_predictive(cfg, run, targets, outputs: dict, *, artifact: str = "head",
                        dataset_path=None, backbone_run_id: str | None = None,
                        logg: dict | None = None, subset_metrics: bool = True,
                        rows: dict | None = None, conformal: bool = False) -> dict[str, float]:
    """Recalibrate, evaluate and draw the predictions of a Bayesian head (module docstring).

    Parameters
    ----------
    cfg : DictConfig
        The job's config (``stage.recalibration``, ``stage.figures``, ``evaluate``, ``seed``,
        ``split``).
    run : TrackedRun
    targets : list of str
    outputs : dict
        Subset (``val``, ``test``) -> ``(pred, true)``: ``pred`` has ``mean`` and ``std``
        ``[N, T]``, ``true`` is ``[N, T]`` (physical units). ``val`` is required.
    artifact : str
        Folder of the run that receives ``recalibration.json`` (``head`` or ``heads``).
    dataset_path : path-like, optional
        For the label-plane figure.
    backbone_run_id : str, optional
        Adds the backbone's curves to the learning-curve figure.
    logg : dict, optional
        Subset -> logg labels ``[N]``, for the per-logg-subset metrics (default: the ``logg``
        column of ``true`` when it is a target).
    subset_metrics : bool
        Log the residual metrics per logg subset (``val/sigma_dwarf_teff``, ...); off for the
        two-stage logg, whose ``sigma_dwarf_logg`` is head h1's own figure.
    rows : dict, optional
        Subset -> dataset rows of the predicted stars: with ``dataset_path`` the out-of-sample
        scores use the dataset's noise-free truth and the ranking ceiling
        (:mod:`stellarexp.evaluate.scoring_run`).
    conformal : bool
        Score out of sample with crepes' conformal predictive system instead of the recalibrated
        Gaussian (``stage.method=conformal``).

    Returns
    -------
    dict
        Metrics to log (the caller logs them with its final step).
    """
    if "val" not in outputs:
        raise ValueError("evaluate_predictive needs the validation predictions ('val')")
    pred_val, true_val = outputs["val"]
    recal = fit_and_log_recalibration(cfg, run, targets, pred_val, true_val, artifact)
    metrics = {f"recal/scale_{t}": float(s) for t, s in zip(targets, recal.scale)}
    ev = cfg.evaluate
    for subset, (pred, true) in outputs.items():
        true = np.asarray(true, float)
        g = (logg or {}).get(subset)
        if g is None and "logg" in targets:
            g = true[:, list(targets).index("logg")]
        metrics.update(uncertainty_report(true, pred["mean"], pred["std"], targets, subset,
                                          recalibration=recal, logg=g))
        if g is not None and subset_metrics:
            for j, t in enumerate(targets):
                metrics.update(subset_regression_metrics(
                    true[:, j], pred["mean"][:, j], g, subset, t,
                    n_boot=int(ev.bootstrap), level=float(ev.level), seed=int(cfg.seed)))
        for t in targets:
            log.info("%s %s: coverage of the 95%% interval %.3f raw -> %.3f recalibrated (%s)",
                     subset, t, metrics[metric_name(subset, "coverage95_raw", t)],
                     metrics[metric_name(subset, "coverage95_cal", t)], recal.method)

    figures = bool(cfg.stage.figures)
    metrics.update(score_out_of_sample(cfg, run, targets, outputs, artifact=artifact,
                                       dataset_path=dataset_path, rows=rows, figures=figures,
                                       conformal=conformal))
    if figures:
        draw_figures(cfg, run, targets, outputs, recal, dataset_path=dataset_path,
                     backbone_run_id=backbone_run_id, prefix=artifact)
    return metrics


def draw_figures(cfg, run, targets, outputs: dict, recal, *, dataset_path=None,
                 backbone_run_id: str | None = None, prefix: str = "head") -> list:
    """Draw and log this head's figures under ``figures/``; return the written paths."""
    subset = eval_subset(str(cfg.split.name))
    subset = subset if subset in outputs else "val"
    pred, true = outputs[subset]
    true = np.asarray(true, float)
    cal_std = recal.std(pred["std"])
    folder = run.output_dir / "figures"
    what = f"{prefix}, {subset} subset of split={cfg.split.name}"
    paths = []
    paths.append(optional_figure("pred_vs_true", fg.pred_vs_true,
                       {t: (true[:, j], pred["mean"][:, j]) for j, t in enumerate(targets)},
                       folder / f"{prefix}_pred_vs_true.png", title=what))
    paths.append(optional_figure("uncertainty_vs_label", fg.uncertainty_vs_label,
                       {t: {"raw": (true[:, j], pred["std"][:, j]),
                            f"recalibrated ({recal.method})": (true[:, j], cal_std[:, j])}
                        for j, t in enumerate(targets)},
                       folder / f"{prefix}_uncertainty_vs_label.png", title=what))

    def curves():
        out = {}
        for j, t in enumerate(targets):
            def interval(level, j=j):
                lo, hi = recal.interval(pred["mean"], pred["std"], level)
                return lo[:, j], hi[:, j]

            out[t] = {"raw": calibration_curve(true[:, j], pred["mean"][:, j], pred["std"][:, j]),
                      f"recalibrated ({recal.method})": calibration_curve(
                          true[:, j], pred["mean"][:, j], cal_std[:, j], interval=interval)}
        return out

    c = optional_figure("calibration curve", curves)
    if c is not None:
        paths.append(optional_figure("calibration", fg.calibration_figure, c, CALIBRATION_LEVELS,
                           folder / f"{prefix}_calibration.png", title=what))

    def histories():
        out = {f"{prefix} (this run)": fg.run_histories(
            run.client, run.run_id, ["train/nll", "val/nll", "train/loss", "val/loss"]
            + [f"{p}/{k}" for p in ("dwarf", "giant") for k in ("train/loss", "val/loss")])}
        if backbone_run_id:
            out["backbone"] = fg.run_histories(run.client, backbone_run_id,
                                               ["train/loss", "val/loss"])
            out["backbone sigma"] = fg.run_histories(run.client, backbone_run_id,
                                                     [f"val/sigma_{t}" for t in targets])
        return {k: v for k, v in out.items() if v}

    h = optional_figure("learning curves", histories)
    if h:
        paths.append(optional_figure("learning curves", fg.learning_curves, h,
                           folder / f"{prefix}_learning_curves.png"))
    if dataset_path is not None:
        def plane():
            stars = read_stars(dataset_path)
            return fg.label_plane(stars["teff"], stars["logg"], stars["fe_h"],
                                  folder / "label_plane.png")

        paths.append(optional_figure("label plane", plane))
    paths = [p for p in paths if p is not None]
    for p in paths:
        run.log_figure(p)
    return paths
