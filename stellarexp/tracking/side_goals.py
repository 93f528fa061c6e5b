"""What a side input buys: the image rows with it against the same rows without (issue 30).

The image stages can read tabular side inputs beside the backbone features (``model.side_inputs``,
e.g. the Gaia parallax; docs/parallax.md); their rows carry the side key (``ours_head_parallax``).
This section of the report's goals compares, from the very rows the table shows:

- each label's sigma with the side input against the image-only sigma: logg at most
  ``max_logg_ratio`` times it, Teff and [Fe/H] no worse (ratio at most 1);
- the two-stage logg (Eq. 20) with the side-input classifier against the one-stage logg with
  the side input: below it;
- the dwarf/giant classifier with and without the side input, against labels and, on synthetic
  data, against the noise-free truth, beside the two ceilings: the labels' own agreement with
  the truth (the most any classifier reaches against labels) and a classifier given noise-free
  photometry and parallax (:mod:`stellarexp.evaluate.class_ceiling`).

Goals live in ``stellarexp/conf/stage/report.yaml`` (``side_goals``); the report run logs the
figures as ``goal/side_...`` metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stellarexp.tracking.compare import Comparison
from stellarexp.tracking.goals import dataclass_from_config
from stellarexp.tracking.row_sources import TARGETS
from stellarexp.tracking.table_format import HEADERS, format_value, markdown_table

CLASSIFIER_ROWS = (("ours_logg_accuracy", "against labels"),
                   ("ours_logg_accuracy_truth", "against the truth"))
CEILING_ROWS = (("logg_label_truth_agreement", "labels on the truth's side of the threshold"),
                ("logg_class_ceiling", ("classifier given noise-free photometry and parallax, "
                                       "against the truth")))


@dataclass(frozen=True)
class SideGoals:
    """What the side input should buy.

    Attributes
    ----------
    side_key : str
        Suffix of the side-input rows (``"_parallax"`` for ``model.side_inputs=[parallax]``).
    max_logg_ratio : float
        The logg sigma with the side input at most this times the image-only one.
    max_other_ratio : float
        Teff and [Fe/H] with the side input at most this times image-only (1: no worse).
    """

    side_key: str = "_parallax"
    max_logg_ratio: float = 0.6
    max_other_ratio: float = 1.0

    @classmethod
    def from_config(cls, cfg) -> SideGoals:
        """From the ``side_goals`` mapping of the report stage (missing keys take the defaults)."""
        return dataclass_from_config(cls, cfg, "stage.side_goals")

    def limit(self, target: str) -> float:
        return self.max_logg_ratio if target == "logg" else self.max_other_ratio


@dataclass
class SideReport:
    """Every comparison of one side input; NaN where a row is missing."""

    goals: SideGoals
    sigmas: dict[str, tuple[float, float]]  # target -> (image only, with the side input)
    one_stage_logg: float
    two_stage_logg: float
    classifier: dict[str, tuple[float, float]]  # row -> (image only, with the side input)
    ceilings: dict[str, float]

    def ratio(self, target: str) -> float:
        without, with_side = self.sigmas[target]
        return with_side / without

    def met(self, target: str) -> bool:
        return self.ratio(target) <= self.goals.limit(target)

    def metrics(self) -> dict[str, float]:
        """``goal/side_...`` metrics for the report run (finite values only)."""
        key = self.goals.side_key
        out = {f"goal/side_ratio_{t}{key}": self.ratio(t) for t in self.sigmas}
        out[f"goal/side_two_stage_minus_one_stage_logg{key}"] = (self.two_stage_logg
                                                                 - self.one_stage_logg)
        return {k: float(v) for k, v in out.items() if math.isfinite(v)}


def _sigma(comp: Comparison, key: str, target: str = "logg") -> float:
    for row in comp.rows:
        if row.key == key and target in row.cells:
            return row.cells[target].value
    return math.nan


def check(comp: Comparison, goals: SideGoals = SideGoals()) -> SideReport | None:
    """The side input's comparisons; ``None`` when the table has no row with it."""
    key = goals.side_key
    if not any(row.key.endswith(key) for row in comp.rows):
        return None
    sigmas = {t: (_sigma(comp, "ours_head", t), _sigma(comp, f"ours_head{key}", t))
              for t in TARGETS}
    sigmas = {t: v for t, v in sigmas.items() if all(math.isfinite(x) for x in v)}
    classifier = {row: (_sigma(comp, row), _sigma(comp, f"{row}{key}")) for row, _ in CLASSIFIER_ROWS}
    return SideReport(goals=goals, sigmas=sigmas,
                      one_stage_logg=_sigma(comp, f"ours_head{key}"),
                      two_stage_logg=_sigma(comp, f"ours_logg_two_stage{key}"),
                      classifier=classifier,
                      ceilings={row: _sigma(comp, row) for row, _ in CEILING_ROWS})


def _text(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def to_markdown(report: SideReport) -> str:
    """The section: label sigmas with and without, the two-stage line, the classifier lines."""
    g = report.goals
    lines = [(f"What the side input `{g.side_key.lstrip('_')}` buys (rows `ours_head{g.side_key}` "
             f"against `ours_head`): logg at most {g.max_logg_ratio:g} x the image-only sigma, "
             f"Teff and [Fe/H] at most {g.max_other_ratio:g} x"), ""]
    rows = [[HEADERS[t], format_value(without, t), format_value(with_side, t),
             _text(report.ratio(t), 2), f"<= {g.limit(t):g}",
             "met" if report.met(t) else "NOT met"]
            for t, (without, with_side) in report.sigmas.items()]
    lines.append(markdown_table(["target", "image only", f"with {g.side_key.lstrip('_')}",
                                 "ratio", "goal", ""], rows))
    if math.isfinite(report.two_stage_logg) and math.isfinite(report.one_stage_logg):
        below = report.two_stage_logg < report.one_stage_logg
        lines += ["", (f"Two-stage logg with the side-input classifier {report.two_stage_logg:.3f} "
                      f"dex against one-stage with the side input {report.one_stage_logg:.3f} dex: "
                      f"goal (below) {'met' if below else 'NOT met'}.")]
    parts = [f"{what}: image only {_text(a, 2)}%, with it {_text(b, 2)}%"
             for (row, what) in CLASSIFIER_ROWS
             for a, b in [report.classifier[row]] if math.isfinite(a) or math.isfinite(b)]
    parts += [f"{what}: {_text(report.ceilings[row], 2)}%" for row, what in CEILING_ROWS
              if math.isfinite(report.ceilings[row])]
    if parts:
        lines += ["", "Dwarf/giant classifier accuracy: " + "; ".join(parts) + "."]
    return "\n".join(lines) + "\n"
