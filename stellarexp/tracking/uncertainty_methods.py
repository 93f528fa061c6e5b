"""The uncertainty methods side by side (issue 27): one table from the ``stage=head`` runs of one
backbone, one row per method and label, and the method chosen by NLL on fitting stars only.

Every head run scores its predictive out of sample (:mod:`stellarexp.evaluate.scoring_run`):
coverage of the 68/95% intervals, their widths, the 95% interval score, NLL, CRPS, the rho of
``|error against the noise-free truth|`` with the std beside the ranking ceiling, and its cost
(head-prediction seconds per 1,000 stars). It also logs, per fold, the mean NLL of the stars the
fold *fits* on (``oos/fit_nll_fold<k>_<label>``): under ``split=holdout`` the validation set, under
``split=paper`` each cross-fitting fold's fitting half. The best method is the one with the lowest
NLL averaged over labels on those stars, chosen in each fold separately, so no method is ever
chosen on the stars it is scored on. The row ``selected`` scores that procedure: each scored star
is predicted by the method its fold chose (from the runs' per-star ``head/out_of_sample.csv``);
when both folds choose the same method it is that method's row, and the report names it as the
best. Every method here gives a full predictive (the conformal predictive system's density is
its kernel smoothing, :mod:`stellarexp.evaluate.conformal`), so every one can be chosen; a
method whose runs log no fitting NLL would report its intervals and never be chosen.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stellarexp.constants import INTERVAL_LEVELS, PAPER_HEAD_METHOD
from stellarexp.data.dataset import read_stars
from stellarexp.evaluate.metrics import error_spearman
from stellarexp.evaluate.mixture import Mixture
from stellarexp.evaluate.out_of_sample import score_stars
from stellarexp.evaluate.ranking_ceiling import ceiling_features, ceiling_rho
from stellarexp.evaluate.scoring_run import STAR_COLUMNS, interval_columns, star_scores
from stellarexp.tracking.row_sources import TARGETS

log = logging.getLogger(__name__)
SELECTED = "selected"

METHOD_SCORES: dict[str, str] = {
    "coverage68": "cov68",
    "coverage95": "cov95",
    "coverage95_ok": "cov95 ok",
    "width68": "width68",
    "width95": "width95",
    "interval_score95": "IS95",
    "nll": "NLL",
    "crps": "CRPS",
    "spearman_truth": "rho truth",
    "ceiling_rho": "ceiling",
}
"""Out-of-sample scores shown per method and label (``oos/<score>_<label>``), with headers."""
BAND = ("coverage95_lo", "coverage95_hi")  # the 95% coverage's binomial range (for the figure)
COST_METRIC = "cost/predict_s_per_1000"
RHO_TARGET, CEILING_SHARE, CEILING_LOW = 0.3, 0.75, 0.4  # issue 27's rho target


@dataclass
class Choice:
    """The method chosen by fitting-star NLL.

    Attributes
    ----------
    per_fold : list of str
        The method with the lowest mean fitting NLL in each fold.
    fit_nll : dict
        Method -> per-fold mean (over labels) fitting NLL.
    best : str or None
        The method every fold chose, or ``None`` when the folds disagree or none has an NLL.
    """

    per_fold: list[str]
    fit_nll: dict[str, list[float]]
    best: str | None


def side_key_of(run) -> str:
    """The run's side inputs as a key (``""``: image features only; runs from before side
    inputs carry no tag and are image-only)."""
    return run.data.tags.get("side_key", "")


def side_keys(head_runs: list) -> list[str]:
    """The side-input groups among the runs, image-only first."""
    return sorted({side_key_of(r) for r in head_runs}, key=lambda k: (k != "", k))


def latest_by_method(head_runs: list, side_key: str = "") -> dict[str, object]:
    """The newest run of each ``head_method`` among the runs with these side inputs, on the
    backbone of the newest of them (runs newest first; untagged runs are ``bbb``: they predate
    the methods). Methods are compared on the same inputs only: a head that also reads the
    parallax is not set against image-only ones."""
    runs = [r for r in head_runs if side_key_of(r) == side_key]
    if not runs:
        return {}
    backbone = runs[0].data.tags.get("backbone_run_id")
    out: dict[str, object] = {}
    for r in runs:
        if r.data.tags.get("backbone_run_id") == backbone:
            out.setdefault(r.data.tags.get("head_method", PAPER_HEAD_METHOD), r)
    return out


def method_frame(by_method: dict, targets=TARGETS) -> pd.DataFrame:
    """One row per method and label: the scores of :data:`METHOD_SCORES`, cost and run id."""
    rows = []
    for method, r in by_method.items():
        m = r.data.metrics
        for t in targets:
            if f"oos/coverage95_{t}" not in m:
                continue
            row = {"method": method, "label": t}
            row.update({k: m.get(f"oos/{k}_{t}", math.nan) for k in (*METHOD_SCORES, *BAND)})
            row["cost"] = m.get(COST_METRIC, math.nan)
            row["run_id"] = r.info.run_id
            rows.append(row)
    return pd.DataFrame(rows)


def choose(by_method: dict, targets=TARGETS) -> Choice:
    """The method with the lowest fitting-star NLL (mean over labels) in each fold."""
    fit: dict[str, list[float]] = {}
    for method, r in by_method.items():
        m = r.data.metrics
        scored = [t for t in targets if f"oos/coverage95_{t}" in m]
        folds = []
        for k in range(2):  # holdout: fold 0 only; cross-fitting: folds 0 and 1
            vals = [m.get(f"oos/fit_nll_fold{k}_{t}", math.nan) for t in scored]
            if scored and all(math.isfinite(v) for v in vals):  # every scored label has one
                folds.append(sum(vals) / len(vals))
        if folds:
            fit[method] = folds
    n_folds = min((len(v) for v in fit.values()), default=0)
    per_fold = [min(fit, key=lambda meth, k=k: fit[meth][k]) for k in range(n_folds)]
    best = per_fold[0] if per_fold and len(set(per_fold)) == 1 else None
    return Choice(per_fold, fit, best)


def _per_star(client, run) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_csv(client.download_artifacts(run.info.run_id, "head/out_of_sample.csv", tmp))


def _with_star_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A run's per-star table with each star's intervals, NLL and CRPS; a table written before
    those columns existed gets the ones of the Gaussian of its recalibrated std (what such runs
    scored)."""
    if all(c in table for c in STAR_COLUMNS):
        return table
    gauss = Mixture.gaussian(table["mean"], table["std"])
    return table.assign(**interval_columns(gauss.interval),
                        **star_scores(table["y"], gauss.nll, gauss.crps))


def _score_part(part: pd.DataFrame) -> dict[str, float]:
    """Scores of per-star rows from their own intervals, NLL and CRPS, over the stars their run
    scored (a finite label, mean and NLL)."""
    keep = np.isfinite(part[["y", "mean", "nll"]].to_numpy(float)).all(axis=1)
    part = part[keep]
    return score_stars(part["y"].to_numpy(float),
                       {lv: (part[f"lo{tag}"], part[f"hi{tag}"]) for lv, tag in INTERVAL_LEVELS.items()},
                       part["nll"].to_numpy(float), part["crps"].to_numpy(float))


def selected_frame(client, by_method: dict, choice: Choice, frame: pd.DataFrame,
                   targets=TARGETS) -> pd.DataFrame:
    """The ``selected`` rows: each scored star predicted by its fold's chosen method (module
    docstring). Agreeing folds give that method's rows; otherwise the runs' per-star tables are
    combined and scored from each star's own intervals, NLL and CRPS (the ceiling on the run's
    dataset when it is readable)."""
    if not choice.per_fold:
        return pd.DataFrame()
    if choice.best is not None:
        return frame[frame["method"] == choice.best].assign(method=SELECTED)
    tables = {m: _with_star_columns(_per_star(client, by_method[m])) for m in set(choice.per_fold)}
    first = by_method[choice.per_fold[0]]
    stars = None
    path = first.data.tags.get("data_path")
    if path and Path(path).is_file():
        stars = read_stars(path)
    rows = []
    for t in targets:
        parts = [tables[m][(tables[m]["label"] == t) & (tables[m]["fold"] == k)]
                 for k, m in enumerate(choice.per_fold)]
        part = pd.concat(parts, ignore_index=True)
        if part.empty:
            continue
        values = _score_part(part)
        truth = part["truth"].to_numpy(float)
        values["spearman_truth"] = error_spearman(truth, part["mean"], part["std_raw"])
        values["ceiling_rho"] = math.nan
        if stars is not None and np.isfinite(truth).all():
            try:
                values["ceiling_rho"] = ceiling_rho(
                    ceiling_features(stars.iloc[part["row"].to_numpy(int)]).reset_index(drop=True),
                    np.abs(part["mean"].to_numpy(float) - truth),
                    seed=int(first.data.params.get("seed", 0)))
            except ValueError as exc:  # a dataset without the photometry columns
                log.warning("ranking ceiling of the selected %s skipped: %s", t, exc)
        costs = [by_method[m].data.metrics.get(COST_METRIC, math.nan) * len(p)
                 for m, p in zip(choice.per_fold, parts)]
        rows.append({"method": SELECTED, "label": t,
                     **{k: values.get(k, math.nan) for k in (*METHOD_SCORES, *BAND)},
                     "cost": sum(costs) / len(part), "run_id": ""})
    return pd.DataFrame(rows)


def target_checks(frame: pd.DataFrame, best: str | None) -> list[str]:
    """Issue 27's targets for the ``selected`` rows, one line each (``best``: the method both
    folds chose, or ``None``)."""
    rows = frame[frame["method"] == SELECTED].set_index("label")
    if rows.empty:
        return []
    lines = []
    bbb = frame[frame["method"] == PAPER_HEAD_METHOD].set_index("label")
    for t, r in rows.iterrows():
        rho, ceil = r["spearman_truth"], r["ceiling_rho"]
        if math.isfinite(ceil) and ceil < CEILING_LOW:
            need, why = CEILING_SHARE * ceil, f"0.75 x ceiling {ceil:.3f}"
        else:
            need, why = RHO_TARGET, "0.3"
        ok = math.isfinite(rho) and rho >= need
        lines.append(f"- {t}: rho truth {rho:.3f} against {why} ({need:.3f}): "
                     f"{'pass' if ok else 'FAIL'}; 95% coverage {r['coverage95']:.3f} "
                     f"{'inside' if r['coverage95_ok'] == 1.0 else 'OUTSIDE'} its binomial range")
    if best == PAPER_HEAD_METHOD:
        lines.append("- the paper's Bayes-by-Backprop head is itself the best: no NLL target")
    elif not bbb.empty:
        ours, theirs = rows["nll"].mean(), bbb["nll"].reindex(rows.index).mean()
        lines.append(f"- mean NLL over labels {ours:.4g} against Bayes-by-Backprop's {theirs:.4g}: "
                     f"{'pass' if ours < theirs else 'FAIL'}")
    return lines


def _fmt(v, kind: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if kind == "coverage95_ok":
        return "yes" if v == 1.0 else "no"
    if kind in ("coverage68", "coverage95", "spearman_truth", "ceiling_rho"):
        return f"{v:.3f}"
    return f"{v:.4g}"


def compare_methods(head_runs: list, targets=TARGETS, *, client=None, side_key: str = ""
                    ) -> tuple[pd.DataFrame, Choice] | None:
    """The methods' frame (with the ``selected`` rows where they can be scored) and the choice
    among the runs with side inputs ``side_key``, or ``None`` with fewer than two methods.
    ``client`` (an MLflow client) reads the per-star tables when the folds choose different
    methods."""
    by_method = latest_by_method(head_runs, side_key)
    if len(by_method) < 2:
        return None
    frame = method_frame(by_method, targets)
    if frame.empty:
        return None
    choice = choose(by_method, targets)
    if client is not None or choice.best is not None:
        try:
            frame = pd.concat([frame, selected_frame(client, by_method, choice, frame, targets)],
                              ignore_index=True)
        except (OSError, KeyError, ValueError) as exc:  # no per-star table: no selected row
            log.warning("the selected method's scores are not shown: %s", exc)
    return frame, choice


def to_markdown(head_runs: list, targets=TARGETS, *, client=None, compared=None,
                figure: str | None = None, side_key: str = "") -> str:
    """The methods' table, the choice and the targets as a Markdown section (``""`` with fewer
    than two methods) for the heads with side inputs ``side_key`` (``""``: image features
    only). ``compared``: :func:`compare_methods`'s result when the caller has it; ``figure``:
    the URI of the methods' figure, linked under the table."""
    compared = compared if compared is not None else compare_methods(
        head_runs, targets, client=client, side_key=side_key)
    if compared is None:
        return ""
    frame, choice = compared
    head = ["method", "label", *METHOD_SCORES.values(), "s / 1000 stars"]
    inputs = (f", backbone features and side inputs {side_key.strip('_').replace('_', ', ')}"
              if side_key else ", backbone features only")
    lines = [f"## Uncertainty methods on one backbone (out of sample{inputs})", "",
             ("Each head method's predictive, recalibrated or conformalised on fitting stars and "
             "scored on others (docs/uncertainty_methods.md). rho truth: Spearman rho of "
             "|mean - noise-free truth| with the std, beside the ranking ceiling. IS95: the 95% "
             "interval score. Cost: head-prediction seconds per 1,000 stars (the backbone pass "
             "is shared). conformal: NLL of its kernel-smoothed density, CRPS of the system."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        cells = [r["method"], r["label"], *(_fmt(r[k], k) for k in METHOD_SCORES),
                 _fmt(r["cost"], "cost")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    if figure:
        caption = "NLL, 95% coverage and rho against truth per method and label"
        lines += [f"Figure: [uncertainty_methods]({figure}) ({caption})", ""]
    fits = "; ".join(f"{m} " + "/".join(f"{v:.4g}" for v in f) for m, f in choice.fit_nll.items())
    if choice.best:
        lines.append(f"Best method by mean NLL on the fitting stars of each fold: **{choice.best}** "
                     f"(fitting NLL per fold: {fits}).")
    elif choice.per_fold:
        lines.append(f"No single best method: the folds chose {', '.join(choice.per_fold)} "
                     f"(fitting NLL per fold: {fits}); the row `{SELECTED}` scores each star "
                     "with its fold's choice.")
    else:
        lines.append("No method logged fitting-star NLLs: none is chosen.")
    checks = target_checks(frame, choice.best)
    if checks:
        what = choice.best or " / ".join(f"fold {k}: {m}" for k, m in enumerate(choice.per_fold))
        lines += ["", f"Targets for the selected method ({what}; issue 27):", *checks]
    return "\n".join(lines) + "\n"
