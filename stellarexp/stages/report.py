"""``stage=report`` (also ``python -m stellarexp.report``): the Table-2 comparison.

Selects runs for one data fingerprint and split (or explicit run ids), prints the Markdown
table (with the uncertainty table of the image-model rows, the head methods' comparison of
:mod:`stellarexp.tracking.uncertainty_methods`, the goals section of
:mod:`stellarexp.tracking.goals`, the perturbation tables of :mod:`stellarexp.tracking.
perturb_report` and links to the figures of every linked run) and logs it as Markdown, CSV and
HTML to this job's "comparison" run, with the goals as ``goal/...`` metrics.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from stellarexp.data.dataset import eval_subset
from stellarexp.data.fingerprint import data_fingerprint
from stellarexp.evaluate.figures import optional_figure
from stellarexp.evaluate.uncertainty_figures import methods_figure
from stellarexp.io_utils import write_csv_atomic, write_text_atomic
from stellarexp.tracking import (
    compare,
    goals,
    perturb_report,
    row_sources,
    side_goals,
    table_format,
    uncertainty_methods,
)

log = logging.getLogger(__name__)


def figure_links(client, runs) -> dict[str, list[tuple[str, str]]]:
    """``{"<stage> run <id8>": [(file name, artifact URI), ...]}`` of the runs' ``figures/``."""
    out = {}
    for r in runs:
        try:
            files = [f for f in client.list_artifacts(r.info.run_id, "figures")
                     if f.path.endswith(".png")]
        except Exception as exc:  # noqa: BLE001 - a store without artifacts still gets a table
            log.warning("cannot list the figures of run %s: %s", r.info.run_id, exc)
            continue
        if files:
            base = str(r.info.artifact_uri).rstrip("/")
            title = f"{r.data.tags.get('stage', 'run')} run {r.info.run_id[:8]}"
            out[title] = [(Path(f.path).stem, f"{base}/{f.path}") for f in files]
    return out


def realism_section(client, run) -> str:
    """The realism table of a ``stage=realism`` run (its ``realism/realism.md``), or ``""``."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(client.download_artifacts(run.info.run_id, "realism/realism.md", tmp))
            text = path.read_text()
        except Exception as exc:  # noqa: BLE001 - a run without its table loses only this section
            log.warning("cannot read the realism table of run %s: %s", run.info.run_id, exc)
            return ""
    return text.replace("## ", f"Data realism (realism run {run.info.run_id[:8]}): ", 1)


def run(cfg, run) -> dict:
    """Build, print and log the comparison table; see the module docstring."""
    scfg = cfg.stage
    split = str(cfg.split.name)
    subset = eval_subset(split)
    names = list(scfg.sources) if scfg.get("sources") else list(row_sources.ROW_SOURCES)
    unknown = [n for n in names if n not in row_sources.ROW_SOURCES]
    if unknown:
        raise ValueError(f"unknown row sources {unknown}; registered: {list(row_sources.ROW_SOURCES)}")
    client = run.client
    run_ids = [str(r) for r in (scfg.get("run_ids") or [])]
    if run_ids:
        runs = sorted((client.get_run(r) for r in run_ids), key=lambda r: -r.info.start_time)
        stages = {row_sources.ROW_SOURCES[n].stage: n for n in names}
        by_source = {n: [r for r in runs if stages.get(r.data.tags.get("stage")) == n] for n in names}
        fps = {r.data.tags.get("data_fingerprint") for r in runs}
        fingerprint = next(iter(fps)) if len(fps) == 1 else None
        if len(fps) > 1:
            log.warning("the selected runs come from %d different datasets", len(fps))
    else:
        experiments = list(scfg.experiments) if scfg.get("experiments") else None
        fingerprint = scfg.get("fingerprint") or data_fingerprint(cfg.data)
        if fingerprint is None:
            newest = [r for n in names for r in compare.search_finished(
                client, stage=row_sources.ROW_SOURCES[n].stage, fingerprint=None, split=split,
                experiments=experiments)[:1]]
            if newest:
                newest.sort(key=lambda r: -r.info.start_time)
                fingerprint = newest[0].data.tags.get("data_fingerprint")
                log.info("no dataset file for the data config: using the newest run's data "
                         "fingerprint %s", fingerprint)
        by_source = {n: compare.search_finished(client, stage=row_sources.ROW_SOURCES[n].stage,
                                                fingerprint=fingerprint, split=split,
                                                experiments=experiments) for n in names}
    comp = compare.build(by_source, split=split, subset=subset, fingerprint=fingerprint,
                         paper=bool(scfg.paper))

    linked = _linked_runs(client, comp, run_ids, fingerprint, split)
    figures = figure_links(client, linked) if scfg.figures else {}
    sections, goal_metrics = [], {}
    if scfg.get("goals") is not None:
        checked = goals.check(comp, goals.Goals.from_config(scfg.goals))
        if checked is not None:
            sections.append(goals.to_markdown(checked))
            goal_metrics = checked.metrics()
    if scfg.get("side_goals") is not None:
        side = side_goals.check(comp, side_goals.SideGoals.from_config(scfg.side_goals))
        if side is not None:
            sections.append(side_goals.to_markdown(side))
            goal_metrics.update(side.metrics())
    sections.append(_methods_section(run, client, by_source.get("head", []), bool(scfg.figures)))
    if scfg.perturbation:
        sections += [perturb_report.section(client, r) for r in linked
                     if r.data.tags.get("stage") == "perturb"]
    if scfg.realism:
        sections += [realism_section(client, r) for r in linked if r.data.tags.get("stage") == "realism"]
    markdown = table_format.to_markdown(comp, paper=bool(scfg.paper),
                                        figures=figures, sections=sections)
    print(markdown, flush=True)
    out = run.output_dir / "comparison"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "comparison.md", markdown)
    write_csv_atomic(table_format.to_frame(comp, paper=bool(scfg.paper), text=False),
                     out / "comparison.csv", index=False)
    write_text_atomic(out / "comparison.html",
                      table_format.to_html(comp, paper=bool(scfg.paper)))
    write_text_atomic(out / "selection.json", json.dumps(
        {"fingerprint": fingerprint, "split": split, "subset": subset, "run_ids": comp.run_ids},
        indent=2))
    run.log_artifact(out, "comparison")
    run.set_tags({"data_fingerprint": fingerprint or "any", "report.subset": subset,
                  "report.n_runs": len(comp.run_ids)})
    if goal_metrics:
        run.log_metrics(goal_metrics)
    return {}


def _methods_section(run, client, head_runs: list, figures: bool) -> str:
    """The uncertainty methods' sections, one per side-input group of heads with two methods or
    more, each with its figure logged on the report run."""
    sections, base = [], None
    for side_key in uncertainty_methods.side_keys(head_runs):
        compared = uncertainty_methods.compare_methods(head_runs, client=client, side_key=side_key)
        link = None
        if compared is not None and figures:
            path = optional_figure("uncertainty methods", methods_figure, compared[0],
                                   run.output_dir / "figures" / f"uncertainty_methods{side_key}.png",
                                   title=f"uncertainty methods on one backbone{side_key} (out of sample)")
            if path is not None:
                run.log_figure(path)
                base = base or str(client.get_run(run.run_id).info.artifact_uri).rstrip("/")
                link = f"{base}/figures/{path.name}"
        sections.append(uncertainty_methods.to_markdown(head_runs, client=client, compared=compared,
                                                        figure=link, side_key=side_key))
    return "\n".join(s for s in sections if s)


def _linked_runs(client, comp, run_ids, fingerprint, split) -> list:
    """The runs whose figures and perturbation tables the report shows.

    With explicit run ids (a reproduce hands every step's run): all of them. Otherwise the runs
    of the table, the backbones of its image-model rows, and the newest perturbation experiment
    and realism report of this data and split.
    """
    if run_ids:
        return [client.get_run(r) for r in run_ids]
    linked = [client.get_run(r) for r in comp.run_ids]
    seen = {r.info.run_id for r in linked}
    for r in list(linked):
        backbone = r.data.tags.get("backbone_run_id")
        if backbone and backbone not in seen:
            seen.add(backbone)
            try:
                linked.append(client.get_run(backbone))
            except Exception as exc:  # noqa: BLE001 - a deleted backbone loses only its figures
                log.warning("backbone run %s of run %s: %s", backbone, r.info.run_id, exc)
    for stage in ("perturb", "realism"):
        linked += compare.search_finished(client, stage=stage, fingerprint=fingerprint, split=split)[:1]
    return linked
