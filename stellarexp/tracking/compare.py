"""Comparison tables from MLflow runs, in the layout of the paper's Table 2.

Rows come from *row sources*: a source names the stage whose runs it reads and how a run's tags
become a row key (``{model}_{features}`` for the baselines). For every row and target the cell is
the latest FINISHED run that logged ``<subset>/sigma_<target>`` for the chosen data fingerprint
and split (or, with explicit run ids, the latest of those). Image-model stages add their rows by
registering another :class:`RowSource` (:func:`register_row_source`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from stellarexp.evaluate.metrics import metric_name

TARGETS: tuple[str, ...] = ("teff", "logg", "fe_h")
HEADERS = {"teff": "Teff (K)", "logg": "logg (dex)", "fe_h": "[Fe/H] (dex)"}
DIGITS = {"teff": 1, "logg": 3, "fe_h": 3}


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
        Row key template over the run's tags, e.g. ``"{model}_{features}"``.
    paper_key : str or None
        Template of the key of the paper's row to show beside it (default: ``key``).
    """

    name: str
    stage: str
    key: str
    paper_key: str | None = None


ROW_SOURCES: dict[str, RowSource] = {}


def register_row_source(source: RowSource) -> None:
    """Add (or replace) a row source; rows appear in registration order of their sources."""
    ROW_SOURCES[source.name] = source


register_row_source(RowSource(name="baseline", stage="baseline", key="{model}_{features}"))


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


@dataclass
class Comparison:
    """A whole comparison: rows, the label-noise floor and what was selected."""

    fingerprint: str | None
    split: str
    subset: str
    rows: list[Row]
    noise: dict[str, float]
    run_ids: list[str]


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
        runs.extend(page)
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
    noise: dict[str, float] = {}
    used: list[str] = []
    for name, runs in runs_by_source.items():
        source = ROW_SOURCES[name]
        by_key: dict[str, Row] = {}
        for run in runs:
            tags = run.data.tags
            key = _format(source.key, tags)
            if key is None:
                continue
            pkey = _format(source.paper_key or source.key, tags)
            row = by_key.get(key)
            if row is None:
                prow = paper_rows.get(pkey, {}) if paper else {}
                row = by_key[key] = Row(key=key, label=prow.get("label", key), source=name,
                                        paper={t: prow.get(t) for t in TARGETS})
            m = run.data.metrics
            for t in TARGETS:
                sig = metric_name(subset, "sigma", t)
                if t in row.cells or sig not in m:
                    continue
                row.cells[t] = Cell(m[sig], m.get(f"{sig}_lo", math.nan), m.get(f"{sig}_hi", math.nan),
                                    run.info.run_id)
                if run.info.run_id not in used:
                    used.append(run.info.run_id)
                noise_name = metric_name(subset, "label_noise", t)
                if t not in noise and noise_name in m:
                    noise[t] = m[noise_name]
        rows += sorted(by_key.values(), key=lambda r: (order.get(r.key, len(order)), r.key))
    return Comparison(fingerprint=fingerprint, split=split, subset=subset, rows=rows,
                      noise=noise, run_ids=used)


def _fmt(value, target: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{DIGITS[target]}f}"


def _cell_text(cell: Cell | None, target: str) -> str:
    if cell is None:
        return "-"
    text = _fmt(cell.value, target)
    if not (math.isnan(cell.lo) or math.isnan(cell.hi)):
        text += f" [{_fmt(cell.lo, target)}, {_fmt(cell.hi, target)}]"
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
                    rec[f"{HEADERS[t].split()[0]} paper"] = "" if value is None else f"{value:.2f}"
            else:
                rec[f"sigma_{t}"] = cell.value if cell else math.nan
                rec[f"sigma_{t}_lo"] = cell.lo if cell else math.nan
                rec[f"sigma_{t}_hi"] = cell.hi if cell else math.nan
                if paper:
                    rec[f"paper_{t}"] = row.paper.get(t)
                rec[f"run_{t}"] = cell.run_id if cell else ""
        if not text:
            rec.update(key=row.key, source=row.source)
        records.append(rec)
    if comp.noise:
        rec = {"method": "label noise floor"}
        for t in TARGETS:
            value = comp.noise.get(t)
            if text:
                rec[HEADERS[t]] = _fmt(value, t) or "-"
                if paper:
                    rec[f"{HEADERS[t].split()[0]} paper"] = ""
            else:
                rec[f"sigma_{t}"] = math.nan if value is None else value
        if not text:
            rec.update(key="label_noise", source="data")
        records.append(rec)
    return pd.DataFrame.from_records(records)


def caption(comp: Comparison) -> str:
    """One line saying what the table compares."""
    fp = comp.fingerprint[:12] if comp.fingerprint else "any"
    return (f"sigma of residuals (std of prediction - label), {comp.subset} subset of split="
            f"{comp.split}, data fingerprint {fp}; [68% bootstrap interval]; {len(comp.run_ids)} runs")


def to_markdown(comp: Comparison, *, paper: bool = True) -> str:
    """GitHub Markdown: a caption line and the table."""
    frame = to_frame(comp, paper=paper)
    if frame.empty:
        return f"{caption(comp)}\n\n(no finished runs match)\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in rec) + " |")
    return f"{caption(comp)}\n\n" + "\n".join(lines) + "\n"


def to_html(comp: Comparison, *, paper: bool = True) -> str:
    """A standalone HTML page with the caption and the table."""
    import html

    frame = to_frame(comp, paper=paper)
    return (f"<!doctype html><meta charset='utf-8'><title>stellarexp comparison</title>"
            f"<p>{html.escape(caption(comp))}</p>\n{frame.to_html(index=False)}\n")
