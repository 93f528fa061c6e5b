"""The perturbation experiments of a ``stage=perturb`` run as report sections (paper Table 1).

Reads the run's CSV artifacts (``perturb/noise_example.csv``, ``perturb/noise.csv``,
``perturb/rotation.csv``; written by :mod:`stellarexp.stages.perturb`) and formats them as
Markdown: the example star in the layout of the paper's Table 1 (prediction, uncertainty and
label per noise level), the noise experiment over all perturbed stars, and the rotation summary.
"""

from __future__ import annotations

import logging
import tempfile
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from stellarexp.tracking.row_sources import TARGETS
from stellarexp.tracking.table_format import HEADERS, format_value, markdown_table

log = logging.getLogger(__name__)

TABLES = ("noise_example", "noise", "rotation")


@lru_cache(maxsize=1)
def paper_table1() -> dict:
    """The paper's Table 1 (``stellarexp/resources/paper_table1.yaml``)."""
    path = Path(__file__).resolve().parent.parent / "resources" / "paper_table1.yaml"
    return yaml.safe_load(path.read_text())


def load_tables(client, run_id: str) -> dict:
    """``{name: DataFrame}`` of the run's ``perturb/<name>.csv`` files that exist."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(client.download_artifacts(run_id, "perturb", tmp))
        except Exception as exc:  # noqa: BLE001 - a run without the tables gets no section
            log.warning("cannot read the perturbation tables of run %s: %s", run_id, exc)
            return out
        for name in TABLES:
            path = folder / f"{name}.csv"
            if path.is_file():
                out[name] = pd.read_csv(path)
    return out


def _pm(mean: float, std: float, target: str) -> str:
    return f"{format_value(mean, target)} ± {format_value(std, target)}"


def table1_markdown(example) -> str:
    """The example star in Table 1's layout, the paper's star beside it.

    One line per noise level: prediction ± head std (the paper's "uncertainty") and, in
    parentheses, the recalibrated std; the last line holds the labels. The paper's star is
    another star, so only the trends (how prediction and uncertainty move with eps) compare.
    """
    paper = paper_table1()
    p_eps = [float(e) for e in paper["eps"]]
    targets = [t for t in TARGETS if f"{t}_mean" in example]
    header = ["eps"]
    for t in targets:
        header += [HEADERS[t], f"{HEADERS[t].split()[0]} paper"]
    rows = []
    for i, eps in enumerate(float(e) for e in example["eps"]):
        cells = [f"{eps:g}"]
        j = next((k for k, e in enumerate(p_eps) if abs(e - eps) < 1e-9), None)
        for t in targets:
            ours = _pm(float(example[f"{t}_mean"].iloc[i]), float(example[f"{t}_std"].iloc[i]), t)
            if f"{t}_std_cal" in example:
                ours += f" ({format_value(float(example[f'{t}_std_cal'].iloc[i]), t)})"
            theirs = (f"{paper['prediction'][t][j]:g} ± {paper['uncertainty'][t][j]:g}"
                      if j is not None else "")
            cells += [ours, theirs]
        rows.append(cells)
    cells = ["label"]
    for t in targets:
        cells += [format_value(float(example[f"{t}_label"].iloc[0]), t)
                  if f"{t}_label" in example else "-", f"{paper['label'][t][0]:g}"]
    rows.append(cells)
    return markdown_table(header, rows) + "\n"


def noise_markdown(noise) -> str:
    """Per noise level and target, averaged over the perturbed stars and the noise draws."""
    cols = ["n", "abs_shift_mean", "std_mean", "sigma", "coverage95_cal"]
    agg = noise.groupby(["eps", "target"], sort=False)[cols].mean().reset_index()
    header = ["eps", "target", "stars", "mean abs. shift", "mean head std", "sigma",
              "coverage95 (recalibrated)"]
    rows = [[f"{r.eps:g}", HEADERS[r.target], int(r.n), format_value(r.abs_shift_mean, r.target),
             format_value(r.std_mean, r.target), format_value(r.sigma, r.target),
             f"{r.coverage95_cal:.3f}"] for r in agg.itertuples(index=False)]
    return markdown_table(header, rows) + "\n"


def rotation_markdown(rotation) -> str:
    """Mean over the angles per target: shift against 0 degrees, sigma, coverage."""
    turned = rotation[rotation["angle"] != 0]
    agg = turned.groupby("target", sort=False)[["abs_shift_mean", "std_cal_mean", "sigma",
                                                "coverage95_cal"]].mean()
    n_angles = turned["angle"].nunique()
    header = ["target", f"mean abs. shift over {n_angles} angles", "mean recalibrated std",
              "sigma", "coverage95 (recalibrated)"]
    rows = [[HEADERS[t], format_value(r.abs_shift_mean, t), format_value(r.std_cal_mean, t),
             format_value(r.sigma, t), f"{r.coverage95_cal:.3f}"] for t, r in agg.iterrows()]
    return markdown_table(header, rows) + "\n"


def section(client, run) -> str:
    """The Markdown section of one perturb run (empty when it logged no tables).

    A table whose CSV lacks a column it needs is left out with a warning naming the run and the
    file: an older or hand-edited perturb run never fails the report.
    """
    tables = load_tables(client, run.info.run_id)
    rid = run.info.run_id[:8]
    layout = (("noise_example", table1_markdown,
               (f"Table 1 (noise on g, r, i; one validation star; prediction ± head std "
               f"(recalibrated std); perturb run {rid})")),
              ("noise", noise_markdown,
               "Noise experiment over all perturbed stars (shift against the clean prediction)"),
              ("rotation", rotation_markdown, "Rotation experiment (Fig. 8; shift against 0 degrees)"))
    parts = []
    for name, fmt, title in layout:
        if name not in tables:
            continue
        try:
            parts.append(f"{title}\n\n{fmt(tables[name])}")
        except (KeyError, AttributeError, ValueError, TypeError) as exc:
            log.warning("perturb run %s: perturb/%s.csv left out of the report (%s: %s)",
                        run.info.run_id, name, type(exc).__name__, exc)
    return "\n".join(parts)
