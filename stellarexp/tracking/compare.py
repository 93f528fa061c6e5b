"""Comparison tables from MLflow runs, in the layout of the paper's Table 2: the finished runs
found, and the table's rows and reference figures assembled from them.

Rows come from the row sources of :mod:`stellarexp.tracking.row_sources`: a source names the
stage whose runs it reads and how a run's tags become a row key (``{model}_{features}`` for the
baselines). For every row and target the cell is the latest FINISHED run that logged
``<subset>/sigma_<target>`` for the chosen data fingerprint and split (or, with explicit run
ids, the latest of those); a source whose runs log several figures (the two-stage logg) lists
one row spec per row, each naming the metric that fills each column.

Rows whose runs log uncertainty metrics (``stage=head``, the combined logg of
``stage=logg_heads``; docs/evaluation.md) also carry the uncertainty columns of
:data:`UNCERTAINTY_KINDS`, taken from the run that filled the row's sigma cell. The table is
rendered by :mod:`stellarexp.tracking.table_format`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from mlflow.entities import ViewType

from stellarexp.evaluate.metrics import metric_name
from stellarexp.tracking import row_sources
from stellarexp.tracking.display import TRIAL_TAG
from stellarexp.tracking.row_sources import TARGETS

UNCERTAINTY_KINDS: dict[str, str] = {
    "coverage95_raw": "cov95 raw",        # the head's own 95% interval (nothing fitted)
    "oos/coverage68": "cov68",            # coverage of the 68% interval, recalibrated out of sample
    "oos/coverage95": "cov95",            # ... of the 95% interval
    "oos/coverage95_ok": "cov95 ok",      # inside the binomial 95% range of 0.95 for that count
    "oos/width95": "width95",             # mean width of the recalibrated 95% interval
    "oos/nll": "NLL",                     # NLL of the recalibrated predictive (nats)
    "oos/crps": "CRPS",                   # CRPS (label units)
    "oos/spearman": "rho",                # Spearman rho of |error against the label| with the std
    "oos/spearman_truth": "rho truth",    # ... of |error against the noise-free truth|
    "oos/ceiling_rho": "ceiling",         # the ranking ceiling's rho (evaluate/ranking_ceiling.py)
}
"""Uncertainty metric kinds shown beside sigma, with headers: ``oos/<kind>_<target>`` (scored out
of sample, :mod:`stellarexp.evaluate.out_of_sample`) or ``<subset>/<kind>_<target>``."""
UNCERTAINTY_EXTRA = ("oos/coverage95_lo", "oos/coverage95_hi", "oos/width95_sure",
                     "oos/width95_sure_onestage", "oos/n_sure", "oos/coverage95_sure",
                     "oos/coverage95_sure_onestage")
"""Read with the kinds, not shown as columns: the binomial range that ``cov95 ok`` judges, and
the two-stage logg's 95% width beside the one-stage's on the stars its classifier is sure about
(:func:`stellarexp.stages.logg.sure_widths`)."""


def uncertainty_metric(subset: str, kind: str, target: str) -> str:
    """The MLflow metric name of an uncertainty ``kind`` of ``target``."""
    return f"{kind}_{target}" if kind.startswith("oos/") else metric_name(subset, kind, target)


REFERENCE_KINDS: dict[str, str] = {
    "label_noise": "label noise floor",        # scatter of the labels around the truth
    "label_std": "label standard deviation",   # sigma of a predictor that outputs the mean label
}
"""Per-subset reference figures that baseline runs log (``<subset>/<kind>_<target>``), shown as
rows under the methods with these labels, in this order."""


@lru_cache(maxsize=1)
def paper_table() -> dict:
    """The paper's Table 2 (``stellarexp/resources/paper_table2.yaml``)."""
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
    oos_scheme: str = ""


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
        runs.extend(r for r in page if TRIAL_TAG not in r.data.tags)
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
        source = row_sources.ROW_SOURCES[name]  # the registry as it is now (it may be swapped)
        by_key: dict[str, Row] = {}
        for run in runs:
            tags = run.data.tags
            if not source.accepts(tags):
                continue
            tags = {**source.defaults, **tags}
            m = run.data.metrics
            for spec in source.specs():
                key = _format(spec.key, tags)
                if key is None:
                    continue
                if not any(metric_name(subset, kind, t) in m for t, kind in spec.metrics.items()):
                    continue  # e.g. the truth rows of a run on real data
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
                        unc = {k: m[uncertainty_metric(subset, k, t)]
                               for k in (*UNCERTAINTY_KINDS, *UNCERTAINTY_EXTRA)
                               if uncertainty_metric(subset, k, t) in m}
                        if unc:
                            row.uncertainty[t] = unc
                            row.oos_scheme = tags.get("oos_scheme", "")
                    if run.info.run_id not in used:
                        used.append(run.info.run_id)
                    for kind, values in refs.items():
                        name = metric_name(subset, kind, t)
                        if t not in values and name in m:
                            values[t] = m[name]
        rows += sorted(by_key.values(), key=lambda r: (order.get(r.key, len(order)), r.key))
    return Comparison(fingerprint=fingerprint, split=split, subset=subset, rows=rows,
                      references={k: v for k, v in refs.items() if v}, run_ids=used)
