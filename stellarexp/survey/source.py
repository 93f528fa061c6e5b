"""The synthetic survey as a raw-data source of the dataset build.

``stellarexp/conf/data/synthetic.yaml`` names :class:`SyntheticSource` as ``data.source``; the build
(:func:`stellarexp.data.pipeline.build`) instantiates it from config and asks it to write the
survey's files before reading them like real SDSS/APOGEE files. The command line's
``simulate`` calls :func:`simulate` directly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stellarexp.survey import simulate as sim


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def simulate(data_cfg, *, progress: bool = True, force: bool = False) -> dict:
    """Simulate the synthetic survey of ``data_cfg`` (no-op when complete) and return its summary."""
    if str(data_cfg.get("name")) != "synthetic":
        raise ValueError(f"`simulate` needs data=synthetic (got data={data_cfg.get('name')}); real data is "
                         "downloaded (python -m stellarexp.data build data=sdss ...)")
    spec = sim.spec_from_config(data_cfg)
    if not force and sim.survey_complete(spec.root, spec):
        _say(f"synthetic survey '{spec.size}' already complete in {spec.root}")
    else:
        _say(f"simulating the synthetic survey '{spec.size}' ({spec.n_fields} fields, "
             f"{spec.n_fields * spec.labelled_per_field} labelled stars) into {spec.root}")
    return sim.simulate_survey(spec, progress=progress, force=force)


def format_survey_summary(summary: dict) -> str:
    """Human-readable survey summary: counts per cut flag, label statistics, disk size."""
    lines = [f"synthetic survey '{summary['size']}' at {summary['root']}",
             (f"  fields: {summary['n_fields']}   labelled stars: {summary['n_labelled']}   "
              f"cross-match rows: {summary['n_crossmatch_rows']}   allStar rows: {summary['n_label_rows']} "
              f"({summary['n_duplicates']} duplicated stars)"),
             "  stars with flag set (any band):"]
    for name, count in summary["flag_counts"].items():
        lines.append(f"    {name:<24s} {count}")
    lines.append(f"  clean of the paper's flags: {summary['n_flag_clean']}   FE_H_FLAG set: {summary['fe_h_flagged']}   "
                 f"sentinel labels: {summary['sentinel_labels']}")
    lines.append("  true labels: " + "   ".join(
        f"{k} {v['mean']:.2f} +- {v['std']:.2f}" for k, v in summary["label_stats"].items()))
    lines.append(f"  dwarf fraction (logg > 4): {summary['dwarf_fraction']:.3f}")
    lines.append(f"  disk: {summary['disk_mb']} MB" + (f"   time: {summary['simulate_seconds']} s"
                                                        if "simulate_seconds" in summary else ""))
    return "\n".join(lines)


def survey_fingerprint(data_cfg) -> str | None:
    """Fingerprint of the finished survey at ``data.root`` (None while it is incomplete)."""
    manifest = Path(str(data_cfg.root)) / sim.MANIFEST
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


class SyntheticSource:
    """Raw-data source that simulates the synthetic SDSS x APOGEE survey on first use."""

    def prepare(self, data_cfg, *, progress: bool = True, force: bool = False) -> dict:
        """Simulate the survey of ``data_cfg`` when incomplete; return its summary."""
        return simulate(data_cfg, progress=progress, force=force)

    def fingerprint(self, data_cfg) -> str | None:
        """Fingerprint of the survey's content, see :func:`survey_fingerprint`."""
        return survey_fingerprint(data_cfg)
