"""Comparison tables from MLflow runs, in the layout of the paper's Table 2.

Rows come from *row sources*: a source names the stage whose runs it reads and how a run's tags
become a row key (``{model}_{features}`` for the baselines). For every row and target the cell is
the latest FINISHED run that logged ``<subset>/sigma_<target>`` for the chosen data fingerprint
and split (or, with explicit run ids, the latest of those). Image-model stages add their rows by
registering another :class:`RowSource` (:func:`register_row_source`); a source whose runs log
several figures (the two-stage logg) lists one :class:`RowSpec` per row, each naming the metric
that fills each column.

Rows whose runs log uncertainty metrics (``stage=head``, the combined logg of
``stage=logg_heads``; docs/evaluation.md) also carry the uncertainty columns of
:data:`UNCERTAINTY_KINDS`, taken from the run that filled the row's sigma cell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from stellarexp.constants import LABELS
from stellarexp.evaluate.metrics import metric_name

TARGETS = LABELS
HEADERS = {"teff": "Teff (K)", "logg": "logg (dex)", "fe_h": "[Fe/H] (dex)"}
DIGITS = {"teff": 1, "logg": 3, "fe_h": 3}

UNCERTAINTY_KINDS: dict[str, str] = {
    "coverage68_cal": "cov68",            # coverage of the recalibrated 68% interval
    "coverage95_raw": "cov95 raw",        # ... of the raw (head-only) 95% interval
    "coverage95_cal": "cov95",            # ... of the recalibrated 95% interval
    "width95_cal": "width95",             # mean width of the recalibrated 95% interval
    "nll_cal": "NLL",                     # Gaussian NLL of the recalibrated predictive (nats)
    "crps_cal": "CRPS",                   # Gaussian CRPS (label units)
    "spearman_raw": "Spearman",           # rank correlation of |error| with the std
}
"""Uncertainty metric kinds (``<subset>/<kind>_<target>``) shown beside sigma, with headers."""

REFERENCE_KINDS: dict[str, str] = {
    "label_noise": "label noise floor",        # scatter of the labels around the truth
    "label_std": "label standard deviation",   # sigma of a predictor that outputs the mean label
}
"""Per-subset reference figures that baseline runs log (``<subset>/<kind>_<target>``), shown as
rows under the methods with these labels, in this order."""


@dataclass(frozen=True)
class RowSpec:
    """One row that a source makes from each of its runs.

    Attributes
    ----------
    key : str
        Row key template over the run's tags (a plain string for a fixed row).
    metrics : mapping
        Target column -> metric kind: the cell is ``<subset>/<kind>_<target>`` (with its
        ``_lo``/``_hi`` interval when logged), e.g. ``{"logg": "sigma_dwarf"}``.
    paper_key : str or None
        Template of the key of the paper's row shown beside it (default: ``key``).
    scale : float
        Factor applied to the metric and its interval (100 shows an accuracy in percent).
    uncertainty : bool
        The row's cells also take the :data:`UNCERTAINTY_KINDS` of their run.
    """

    key: str
    metrics: Mapping[str, str]
    paper_key: str | None = None
    scale: float = 1.0
    uncertainty: bool = False


@dataclass(frozen=True)
class RowSource:
    """How the runs of one stage become rows.

    Attributes
    ----------
    name : str
        Source name (``stage.sources`` selects by it).
    stage : str
        Value of the runs' ``stage`` tag.
    key : str
        Row key template over the run's tags, e.g. ``"{model}_{features}"``: one row whose
        columns are ``<subset>/sigma_<target>``. Unused when ``rows`` is given.
    paper_key : str or None
        Template of the key of the paper's row to show beside it (default: ``key``).
    rows : tuple of RowSpec
        Several rows per run, each with its own metrics (replaces ``key``/``paper_key``).
    """

    name: str
    stage: str
    key: str = ""
    paper_key: str | None = None
    rows: tuple[RowSpec, ...] = ()

    def specs(self) -> tuple[RowSpec, ...]:
        """The rows of this source (``key`` alone means sigma in every target column)."""
        if self.rows:
            return self.rows
        return (RowSpec(self.key, {t: "sigma" for t in TARGETS}, self.paper_key,
                        uncertainty=True),)


ROW_SOURCES: dict[str, RowSource] = {}


def register_row_source(source: RowSource) -> None:
    """Add (or replace) a row source; rows appear in registration order of their sources.

    One source per stage: the report sorts explicitly selected runs to sources by stage.
    """
    if not (source.key or source.rows):
        raise ValueError(f"row source {source.name!r} needs a key template or rows")
    ROW_SOURCES[source.name] = source


register_row_source(RowSource(name="baseline", stage="baseline", key="{model}_{features}"))

# The image model (docs/image_model.md; the paper's section 4.1 and Table 2). The head's row
# carries logg from the one-stage head, so the paper's one-stage logg stands beside it; the
# two-stage figures come from the logg_heads runs, which log them under these kinds.
register_row_source(RowSource(name="head", stage="head", key="ours_head"))
register_row_source(RowSource(name="logg_heads", stage="logg_heads", rows=(
    RowSpec("ours_logg_two_stage", {"logg": "sigma_hard"}, uncertainty=True),  # Eq. 20, hard
    RowSpec("ours_logg_two_stage_soft", {"logg": "sigma_soft"}),  # mixture by the class probability
    RowSpec("ours_logg_above_4", {"logg": "sigma_dwarf"}),      # head h1 on logg > threshold
    RowSpec("ours_logg_below_4", {"logg": "sigma_giant"}),      # head h2 on logg <= threshold
    RowSpec("ours_logg_perfect", {"logg": "sigma_perfect"}),    # true classes in Eq. 20
)))
register_row_source(RowSource(name="logg_classifier", stage="logg_classifier", rows=(
    RowSpec("ours_logg_accuracy", {"logg": "accuracy"}, scale=100.0),
)))


@lru_cache(maxsize=1)
def paper_table() -> dict:
    """The paper's Table 2 (``stellarexp/resources/paper_table2.yaml``)."""
    import yaml

    path = Path(__file__).resolve().parent.parent / "resources" / "paper_table2.yaml"
    return yaml.safe_load(path.read_text())


@dataclass
class Cell:
    """One sigma with its interval and the run it comes from."""

    value: float
    lo: float
    hi: float
    run_id: str


@dataclass
class Row:
    """One method of the table."""

    key: str
    label: str
    source: str
    cells: dict[str, Cell] = field(default_factory=dict)
    paper: dict[str, float | None] = field(default_factory=dict)
    uncertainty: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Comparison:
    """A whole comparison: rows, reference figures and what was selected.

    ``references`` maps a :data:`REFERENCE_KINDS` kind to ``{target: value}``.
    """

    fingerprint: str | None
    split: str
    subset: str
    rows: list[Row]
    references: dict[str, dict[str, float]]
    run_ids: list[str]

    @property
    def noise(self) -> dict[str, float]:
        """The label-noise floor per target (empty when the data carry no truth)."""
        return self.references.get("label_noise", {})

    @property
    def label_std(self) -> dict[str, float]:
        """The standard deviation of the labels per target on the evaluated subset."""
        return self.references.get("label_std", {})


def _format(tpl: str, tags: dict) -> str | None:
    try:
        return tpl.format(**tags)
    except (KeyError, IndexError):
        return None


def search_finished(client, *, stage: str, fingerprint: str | None, split: str,
                    experiments: list[str] | None = None) -> list:
    """FINISHED runs of ``stage`` for one data fingerprint and split, newest first."""
    from mlflow.entities import ViewType

    if experiments:
        exps = [client.get_experiment_by_name(n) for n in experiments]
        ids = [e.experiment_id for e in exps if e is not None]
    else:
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not ids:
        return []
    flt = [f"tags.stage = '{stage}'", f"tags.split = '{split}'", "attributes.status = 'FINISHED'"]
    if fingerprint:
        flt.append(f"tags.data_fingerprint = '{fingerprint}'")
    runs, token = [], None
    while True:
        page = client.search_runs(ids, " and ".join(flt), ViewType.ACTIVE_ONLY, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        # a sweep's trials are explorations, not the method's result: the report counts runs made
        # outside a sweep (e.g. the best configuration re-run with the command the sweep prints)
        runs.extend(r for r in page if "optuna_trial" not in r.data.tags)
        token = page.token
        if not token:
            return runs


def build(runs_by_source: dict[str, list], *, split: str, subset: str,
          fingerprint: str | None, paper: bool = True) -> Comparison:
    """Assemble the table from runs grouped by row source (each list newest first)."""
    table = paper_table()
    paper_rows = table["rows"]
    order = {k: i for i, k in enumerate(paper_rows)}
    rows: list[Row] = []
    refs: dict[str, dict[str, float]] = {k: {} for k in REFERENCE_KINDS}
    used: list[str] = []
    for name, runs in runs_by_source.items():
        source = ROW_SOURCES[name]
        by_key: dict[str, Row] = {}
        for run in runs:
            tags = run.data.tags
            m = run.data.metrics
            for spec in source.specs():
                key = _format(spec.key, tags)
                if key is None:
                    continue
                pkey = _format(spec.paper_key or spec.key, tags)
                row = by_key.get(key)
                if row is None:
                    prow = paper_rows.get(pkey, {}) if paper else {}
                    row = by_key[key] = Row(key=key, label=prow.get("label", key), source=name,
                                            paper={t: prow.get(t) for t in TARGETS})
                for t, kind in spec.metrics.items():
                    sig = metric_name(subset, kind, t)
                    if t in row.cells or sig not in m:
                        continue
                    row.cells[t] = Cell(m[sig] * spec.scale,
                                        m.get(f"{sig}_lo", math.nan) * spec.scale,
                                        m.get(f"{sig}_hi", math.nan) * spec.scale, run.info.run_id)
                    if spec.uncertainty:
                        unc = {k: m[metric_name(subset, k, t)] for k in UNCERTAINTY_KINDS
                               if metric_name(subset, k, t) in m}
                        if unc:
                            row.uncertainty[t] = unc
                    if run.info.run_id not in used:
                        used.append(run.info.run_id)
                    for kind, values in refs.items():
                        name = metric_name(subset, kind, t)
                        if t not in values and name in m:
                            values[t] = m[name]
        rows += sorted(by_key.values(), key=lambda r: (order.get(r.key, len(order)), r.key))
    return Comparison(fingerprint=fingerprint, split=split, subset=subset, rows=rows,
                      references={k: v for k, v in refs.items() if v}, run_ids=used)


def format_value(value, target: str) -> str:
    """A figure of ``target`` with that target's digits (empty for a missing one)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{DIGITS[target]}f}"


def _paper_text(value) -> str:
    """A paper value with two decimals, or as many as it has (0.052 stays 0.052)."""
    if value is None:
        return ""
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


def _cell_text(cell: Cell | None, target: str) -> str:
    if cell is None:
        return "-"
    text = format_value(cell.value, target)
    if not (math.isnan(cell.lo) or math.isnan(cell.hi)):
        text += f" [{format_value(cell.lo, target)}, {format_value(cell.hi, target)}]"
    return text


def to_frame(comp: Comparison, *, paper: bool = True, text: bool = True):
    """The table as a DataFrame: formatted text (``text=True``) or numbers with run ids."""
    import pandas as pd

    records = []
    for row in comp.rows:
        rec = {"method": row.label}
        for t in TARGETS:
            cell = row.cells.get(t)
            if text:
                rec[HEADERS[t]] = _cell_text(cell, t)
                if paper:
                    value = row.paper.get(t)
                    rec[f"{HEADERS[t].split()[0]} paper"] = _paper_text(value)
            else:
                rec[f"sigma_{t}"] = cell.value if cell else math.nan
                rec[f"sigma_{t}_lo"] = cell.lo if cell else math.nan
                rec[f"sigma_{t}_hi"] = cell.hi if cell else math.nan
                if paper:
                    rec[f"paper_{t}"] = row.paper.get(t)
                rec[f"run_{t}"] = cell.run_id if cell else ""
                for kind in UNCERTAINTY_KINDS:
                    rec[f"{kind}_{t}"] = row.uncertainty.get(t, {}).get(kind, math.nan)
        if not text:
            rec.update(key=row.key, source=row.source)
        records.append(rec)
    for kind, label in REFERENCE_KINDS.items():
        values = comp.references.get(kind)
        if not values:
            continue
        rec = {"method": label}
        for t in TARGETS:
            value = values.get(t)
            if text:
                rec[HEADERS[t]] = format_value(value, t) or "-"
                if paper:
                    rec[f"{HEADERS[t].split()[0]} paper"] = ""
            else:
                rec[f"sigma_{t}"] = math.nan if value is None else value
        if not text:
            rec.update(key=kind, source="data")
        records.append(rec)
    return pd.DataFrame.from_records(records)


def caption(comp: Comparison) -> str:
    """One line saying what the table compares."""
    fp = comp.fingerprint[:12] if comp.fingerprint else "any"
    return (f"sigma of residuals (std of prediction - label), {comp.subset} subset of split="
            f"{comp.split}, data fingerprint {fp}; [68% bootstrap interval]; {len(comp.run_ids)} runs")


def uncertainty_frame(comp: Comparison):
    """One line per row and target with uncertainty metrics (formatted text)."""
    import pandas as pd

    records = []
    for row in comp.rows:
        for t in TARGETS:
            unc = row.uncertainty.get(t)
            if not unc:
                continue
            rec = {"method": row.label, "target": HEADERS[t]}
            for kind, header in UNCERTAINTY_KINDS.items():
                v = unc.get(kind)
                if v is None or not math.isfinite(v):
                    rec[header] = "-"
                elif kind.startswith(("coverage", "spearman", "nll")):
                    rec[header] = f"{v:.3f}"
                else:
                    rec[header] = format_value(v, t)
            records.append(rec)
    return pd.DataFrame.from_records(records)


def uncertainty_caption(comp: Comparison) -> str:
    """What the uncertainty table shows."""
    return (f"Uncertainty on the {comp.subset} subset: coverage of the 68%/95% intervals (raw: "
            "the head's own spread; otherwise recalibrated on validation data), mean 95% width, "
            "Gaussian NLL (nats) and CRPS of the recalibrated predictive, Spearman rho of "
            "|error| with the predicted std")


def markdown_table(header, rows) -> str:
    """A GitHub Markdown table (lines joined, no trailing newline) from a header and rows."""
    def line(cells):
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|",
                      *(line(r) for r in rows)])


def _markdown_table(frame) -> list[str]:
    return markdown_table(list(frame.columns), frame.itertuples(index=False)).split("\n")


def to_markdown(comp: Comparison, *, paper: bool = True,
                figures: dict[str, list[tuple[str, str]]] | None = None,
                sections: list[str] | None = None) -> str:
    """GitHub Markdown: a caption line and the table, the uncertainty table, further sections,
    figure links.

    Parameters
    ----------
    figures : dict, optional
        Section title (e.g. ``head run 0123abcd``) -> ``[(name, link), ...]``.
    sections : list of str, optional
        Markdown blocks placed after the tables (e.g. the goals, the perturbation tables).
    """
    frame = to_frame(comp, paper=paper)
    if frame.empty:
        return f"{caption(comp)}\n\n(no finished runs match)\n"
    text = f"{caption(comp)}\n\n" + "\n".join(_markdown_table(frame)) + "\n"
    unc = uncertainty_frame(comp)
    if not unc.empty:
        text += f"\n{uncertainty_caption(comp)}\n\n" + "\n".join(_markdown_table(unc)) + "\n"
    for block in sections or []:
        if block:
            text += "\n" + block.rstrip("\n") + "\n"
    if figures:
        text += "\nFigures\n\n"
        for title, links in figures.items():
            text += f"- {title}: " + ", ".join(f"[{n}]({u})" for n, u in links) + "\n"
    return text


def to_html(comp: Comparison, *, paper: bool = True) -> str:
    """A standalone HTML page with the caption and the table."""
    import html

    frame = to_frame(comp, paper=paper)
    out = (f"<!doctype html><meta charset='utf-8'><title>stellarexp comparison</title>"
           f"<p>{html.escape(caption(comp))}</p>\n{frame.to_html(index=False)}\n")
    unc = uncertainty_frame(comp)
    if not unc.empty:
        out += f"<p>{html.escape(uncertainty_caption(comp))}</p>\n{unc.to_html(index=False)}\n"
    return out
