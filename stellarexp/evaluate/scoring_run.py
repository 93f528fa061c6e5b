"""Out-of-sample uncertainty scores of a run: metrics, a per-star table, figures.

:func:`score_out_of_sample` is called by :func:`~stellarexp.evaluate.predictive.evaluate_predictive`
for every head (``stage=head``, the two-stage ``stage=logg_heads``). For each label it builds the
predictives of the validation (and test) stars — a Gaussian per star, or the mixture a stage
passes as ``pred["mixture"]`` — scores them out of sample
(:mod:`stellarexp.evaluate.out_of_sample`), and where the dataset has noise-free truth also ranks
errors against the truth and prints the ranking ceiling
(:mod:`stellarexp.evaluate.ranking_ceiling`) beside the head's own rho. It logs

- metrics ``oos/<score>_<label>`` (``coverage68``, ``coverage95`` with ``coverage95_lo/_hi``
  and ``coverage95_ok``, ``width68``, ``width95``, ``interval_score95``, ``nll``, ``crps``,
  ``spearman``, ``spearman_truth``, ``ceiling_rho``, ``n``; ``fit_nll_fold<k>``: the NLL of the
  fitting stars of fold ``k``, what a method is chosen by) and the tag ``oos_scheme`` saying
  which stars were fitted and which scored;
- ``<artifact>/out_of_sample.csv``: per scored star and label, the fold that scores it, the
  label, truth, mean, raw and recalibrated std, 68% and 95% intervals, NLL and CRPS;
- figures ``<artifact>_reliability.png`` and ``<artifact>_error_vs_std.png``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from stellarexp.constants import INTERVAL_LEVELS
from stellarexp.data.dataset import read_stars
from stellarexp.evaluate import uncertainty_figures as uf
from stellarexp.evaluate.calibration import recalibration_settings
from stellarexp.evaluate.conformal import conformal_out_of_sample, score_conformal
from stellarexp.evaluate.figures import optional_figure
from stellarexp.evaluate.metrics import error_spearman, metric_name
from stellarexp.evaluate.mixture import Mixture
from stellarexp.evaluate.out_of_sample import binned_errors, out_of_sample, reliability, score
from stellarexp.evaluate.ranking_ceiling import ceiling_features, ceiling_rho
from stellarexp.io_utils import write_csv_atomic

log = logging.getLogger(__name__)

RELIABILITY_LEVELS = np.round(np.arange(0.05, 1.0, 0.05), 2)
STAR_COLUMNS = ("lo68", "hi68", "lo95", "hi95", "nll", "crps")
"""Per-star columns of ``out_of_sample.csv`` beyond the labels, mean and std: the star's 68% and
95% intervals and its NLL and CRPS, whatever the method (what the report's ``selected`` row is
scored from)."""


def predictives_of(pred: dict, j: int) -> Mixture:
    """The predictive of target column ``j``: ``pred["mixture"][j]`` when a stage gives one,
    else the Gaussian ``N(mean, std^2)``."""
    mixtures = pred.get("mixture")
    if mixtures is not None and mixtures[j] is not None:
        return mixtures[j]
    return Mixture.gaussian(np.asarray(pred["mean"], float)[:, j], np.asarray(pred["std"], float)[:, j])


def _stars(dataset_path, rows: dict | None):
    if dataset_path is None or not rows:
        return {}

    stars = read_stars(dataset_path)
    return {s: stars.iloc[np.asarray(r, int)].reset_index(drop=True) for s, r in rows.items()}


def _gaussian_label(outputs: dict, j: int, method: str, level: float, seed: int):
    """Scores of target column ``j``'s Gaussian (or mixture) predictives, recalibrated out of
    sample; the fitting folds' NLL as ``fit_nll_fold<k>``."""
    preds = {s: predictives_of(p, j) for s, (p, _) in outputs.items()}
    labels = {s: np.asarray(y, float)[:, j] for s, (_, y) in outputs.items()}
    oos = out_of_sample(preds, labels, method=method, level=level, seed=seed)
    if not all(np.isfinite(oos.scales)):
        raise ValueError(f"a recalibration factor is infinite ({oos.scheme}; too few fitting "
                         f"stars for the {level} level)")
    values = score(oos.recalibrated, oos.y, rank_std=oos.raw.std)
    values.update({f"fit_nll_fold{k}": v for k, v in enumerate(oos.fit_nll)})
    extra = {"std": oos.recalibrated.std, "mixture": oos, "fold": oos.fold,
             **interval_columns(oos.recalibrated.interval),
             **star_scores(oos.y, oos.recalibrated.nll, oos.recalibrated.crps)}
    return (oos.scheme, oos.subset, oos.index, oos.y, oos.recalibrated.mean, oos.raw.std,
            values, extra)


def interval_columns(interval) -> dict[str, np.ndarray]:
    """Per-star interval columns ``lo68``, ``hi68``, ``lo95``, ``hi95`` (:data:`STAR_COLUMNS`).

    Parameters
    ----------
    interval : callable
        ``interval(level) -> (lo, hi)`` arrays ``[N]`` of the central interval at ``level``.
    """
    out = {}
    for level, tag in INTERVAL_LEVELS.items():
        out[f"lo{tag}"], out[f"hi{tag}"] = interval(level)
    return out


def star_scores(y, nll, crps) -> dict[str, np.ndarray]:
    """Per-star ``nll`` and ``crps`` columns of the finite labels (NaN elsewhere).

    Parameters
    ----------
    y : array_like
        Labels ``[N]``.
    nll, crps : callable
        ``f(y) -> [N]`` per-star scores of the predictive.
    """
    y = np.asarray(y, float)
    ok = np.isfinite(y)
    out = {"nll": np.full(len(y), np.nan), "crps": np.full(len(y), np.nan)}
    if ok.any():
        out["nll"][ok], out["crps"][ok] = nll(y)[ok], crps(y)[ok]
    return out


def _conformal_label(outputs: dict, j: int, seed: int):
    """Scores of target column ``j`` under crepes' conformal predictive system
    (:mod:`stellarexp.evaluate.conformal`); the fitting folds' cross-validated NLL as
    ``fit_nll_fold<k>``."""
    col = {s: (np.asarray(p["mean"], float)[:, j], np.asarray(p["std"], float)[:, j],
               np.asarray(y, float)[:, j]) for s, (p, y) in outputs.items()}
    c = conformal_out_of_sample({s: v[0] for s, v in col.items()}, {s: v[1] for s, v in col.items()},
                                {s: v[2] for s, v in col.items()}, seed=seed)
    values = score_conformal(c)
    values["spearman"] = error_spearman(c.y, c.mean, c.std)
    extra = {"std": np.full(len(c.y), np.nan), "fold": c.fold, "nll": c.nll, "crps": c.crps,
             **interval_columns(c.intervals.__getitem__)}
    return c.scheme, c.subset, c.index, c.y, c.mean, c.std, values, extra


def score_out_of_sample(cfg, run, targets, outputs: dict, *, artifact: str, dataset_path=None,
                        rows: dict | None = None, figures: bool = True,
                        conformal: bool = False) -> dict[str, float]:
    """Score every target's predictive out of sample and log what the module docstring lists.

    Parameters
    ----------
    cfg : DictConfig
        ``stage.recalibration`` (method, level) and ``seed``.
    run : TrackedRun
    targets : list of str
    outputs : dict
        Subset -> ``(pred, true)`` as for ``evaluate_predictive``.
    artifact : str
        Folder of the run for the table; prefix of the figures.
    dataset_path, rows : optional
        The dataset and the subset's dataset rows, for truth and the ranking ceiling.
    conformal : bool
        Score crepes' conformal predictive system on the predictions' mean and std instead of
        the recalibrated Gaussian (``stage.method=conformal``; no reliability figures).

    Returns
    -------
    dict
        The ``oos/...`` metrics.
    """
    method, level = recalibration_settings(cfg)
    label = "conformal predictive system (crepes)" if conformal else method
    seed = int(cfg.seed)
    stars = _stars(dataset_path, rows)
    metrics: dict[str, float] = {}
    tables, curves, bins, counts, scheme = [], {}, {}, {}, ""
    for j, t in enumerate(targets):
        try:
            scored_stars = (_conformal_label(outputs, j, seed) if conformal
                            else _gaussian_label(outputs, j, method, level, seed))
        except ValueError as exc:  # too few stars, a half without a usable label, an infinite factor
            log.warning("out-of-sample scores of %s skipped: %s", t, exc)
            continue
        scheme, subset, index, y, mean, std_raw, values, extra = scored_stars
        scored = stars.get(subset)
        truth = None
        if scored is not None and f"{t}_true" in scored:
            truth = scored[f"{t}_true"].to_numpy(float)[index]
            fin = np.isfinite(y)  # the stars with a label, as the label's rho
            values["spearman_truth"] = error_spearman(truth[fin], mean[fin], std_raw[fin])
            try:
                values["ceiling_rho"] = ceiling_rho(
                    ceiling_features(scored).iloc[index].reset_index(drop=True),
                    np.abs(mean - truth), seed=seed)
            except ValueError as exc:  # a table without the photometry columns: no ceiling
                log.warning("ranking ceiling of %s skipped: %s", t, exc)
        metrics.update({metric_name("oos", k, t): float(v) for k, v in values.items()
                        if v is not None})
        log.info("out of sample %s (%s): 95%% coverage %.3f (binomial range %.3f-%.3f), 68%% %.3f, "
                 "95%% width %.4g, NLL %s, CRPS %.4g, rho %.3f (truth %s, ceiling %s)", t, label,
                 values["coverage95"], values["coverage95_lo"], values["coverage95_hi"],
                 values["coverage68"], values["width95"], _fmt(values.get("nll"), "%.4g"),
                 values["crps"], values["spearman"], _fmt(values.get("spearman_truth")),
                 _fmt(values.get("ceiling_rho")))
        row_ids = np.asarray(rows[subset], int)[index] if rows and subset in rows else index
        tables.append(pd.DataFrame({
            "subset": subset, "row": row_ids, "fold": extra["fold"], "label": t, "y": y,
            "truth": truth if truth is not None else np.nan, "mean": mean,
            "std_raw": std_raw, "std": extra["std"],
            **{k: extra[k] for k in STAR_COLUMNS}}))
        counts[t] = int(values["n"])
        if "mixture" in extra:
            oos = extra["mixture"]
            curves[t] = {f"out of sample ({method})": reliability(oos.recalibrated, oos.y, RELIABILITY_LEVELS),
                         "raw": reliability(oos.raw, oos.y, RELIABILITY_LEVELS)}
            bins[t] = {"label": binned_errors(oos.recalibrated, oos.y)}
            if truth is not None:
                bins[t]["truth"] = binned_errors(oos.recalibrated, truth)
    if not tables:
        return metrics
    run.set_tags({"oos_scheme": scheme, "oos_recalibration": "crepes" if conformal else method})
    folder = run.output_dir / artifact
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "out_of_sample.csv"
    write_csv_atomic(pd.concat(tables, ignore_index=True), path, index=False)
    run.log_artifact(path, artifact)
    if figures and curves:
        title = f"{artifact}: {scheme}"
        out = run.output_dir / "figures"
        for p in (optional_figure("reliability", uf.reliability_figure, curves, RELIABILITY_LEVELS,
                                  counts, out / f"{artifact}_reliability.png", title=title),
                  optional_figure("error vs std", uf.error_vs_std_figure, bins,
                                  out / f"{artifact}_error_vs_std.png", title=title)):
            if p is not None:
                run.log_figure(p)
    return metrics


def _fmt(v, spec: str = "%.3f") -> str:
    return "n/a" if v is None or not np.isfinite(v) else spec % v
