"""How close the image model comes: its sigma against yardsticks taken from the same table.

Three questions a reader of the report asks, answered from a :class:`~stellarexp.tracking.
compare.Comparison` (so from the very runs the table shows):

- Does the image model learn the labels at all? Its sigma as a fraction of the label standard
  deviation on the evaluated subset (the sigma of a predictor that always answers the mean).
- Is it competitive with the tabular baselines? Its sigma over the best colour baseline's.
- Does the two-stage logg (paper section 4.1) beat the one-stage head?
- Do the uncertainties mean what they say? The image model's 95% coverage, recalibrated and
  scored out of sample, inside the binomial 95% range of 0.95 for that many stars, per label;
  the two-stage logg's 95% interval no wider than the one-stage one on the stars the classifier
  is sure about.

Each question has a goal (``stellarexp/conf/stage/report.yaml``: ``goals``); the section says per target
whether the goal is met, and the report run logs the figures as ``goal/...`` metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stellarexp.evaluate.out_of_sample import binomial_range
from stellarexp.tracking.compare import Comparison
from stellarexp.tracking.row_sources import TARGETS
from stellarexp.tracking.table_format import HEADERS, format_value, markdown_table


def dataclass_from_config(cls, cfg, node: str):
    """An instance of the dataclass ``cls`` from the config mapping ``cfg`` (missing keys take
    the defaults; an unknown key is an error naming ``node``)."""
    known = cls.__dataclass_fields__
    unknown = sorted(set(cfg or {}) - set(known))
    if unknown:
        raise ValueError(f"{node}: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**{k: cfg[k] for k in (cfg or {})})


@dataclass(frozen=True)
class Goals:
    """What "close" means.

    Attributes
    ----------
    image_row : str
        Row key of the image model (the one-stage Bayesian head, ``ours_head``).
    two_stage_row : str
        Row key of the two-stage logg that the goal is about (``ours_logg_two_stage``: the
        paper's Eq. 20, hard classes).
    two_stage_soft_row : str
        Row key of the soft mixture of the same heads, reported beside it (not part of the goal).
    colour_suffix : str
        Rows whose key ends with it are the colour baselines.
    max_std_fraction : float
        The image sigma must stay below this fraction of the label standard deviation.
    max_colour_ratio : float
        The image sigma must stay within this factor of the best colour baseline's.
    """

    image_row: str = "ours_head"
    two_stage_row: str = "ours_logg_two_stage"
    two_stage_soft_row: str = "ours_logg_two_stage_soft"
    colour_suffix: str = "_color"
    max_std_fraction: float = 0.5
    max_colour_ratio: float = 1.5

    @classmethod
    def from_config(cls, cfg) -> Goals:
        """From the ``goals`` mapping of the report stage (missing keys take the defaults)."""
        return dataclass_from_config(cls, cfg, "stage.goals")


@dataclass
class TargetCheck:
    """The image model on one target against its two yardsticks (NaN where one is missing)."""

    target: str
    sigma: float
    label_std: float
    best_colour: float
    best_colour_method: str
    std_fraction: float
    colour_ratio: float
    std_goal_met: bool
    colour_goal_met: bool


@dataclass
class GoalReport:
    """Every check of one comparison."""

    goals: Goals
    targets: list[TargetCheck]
    one_stage_logg: float = math.nan
    two_stage_logg: float = math.nan
    two_stage_soft_logg: float = math.nan
    coverage: dict[str, dict[str, float]] = field(default_factory=dict)
    sure_widths: dict[str, float] = field(default_factory=dict)

    @property
    def sure_width_goal_met(self) -> bool:
        """On the sure stars the two-stage 95% interval is no wider than the one-stage one, and
        does not buy that by under-covering (coverage not below the binomial range's floor)."""
        w = self.sure_widths
        floor = binomial_range(int(w.get("n", 0) or 0))[0] if math.isfinite(w.get("n", math.nan)) else math.nan
        return w.get("two", math.nan) <= w.get("one", math.nan) and w.get("cover_two", math.nan) >= floor

    @property
    def two_stage_goal_met(self) -> bool:
        """The two-stage logg is below the one-stage logg."""
        return self.two_stage_logg < self.one_stage_logg

    @property
    def all_met(self) -> bool:
        """Every goal that could be checked is met (and there was something to check)."""
        flags = [c.std_goal_met and c.colour_goal_met for c in self.targets]
        if math.isfinite(self.two_stage_logg) and math.isfinite(self.one_stage_logg):
            flags.append(self.two_stage_goal_met)
        flags += [bool(c["ok"]) for c in self.coverage.values()]
        if self.sure_widths:
            flags.append(self.sure_width_goal_met)
        return bool(flags) and all(flags)

    def metrics(self) -> dict[str, float]:
        """``goal/...`` metrics for the report run (finite values only)."""
        out = {}
        for c in self.targets:
            out[f"goal/std_fraction_{c.target}"] = c.std_fraction
            out[f"goal/colour_ratio_{c.target}"] = c.colour_ratio
        if math.isfinite(self.two_stage_logg) and math.isfinite(self.one_stage_logg):
            out["goal/two_stage_minus_one_stage_logg"] = self.two_stage_logg - self.one_stage_logg
        if math.isfinite(self.two_stage_soft_logg) and math.isfinite(self.one_stage_logg):
            out["goal/two_stage_soft_minus_one_stage_logg"] = (self.two_stage_soft_logg
                                                               - self.one_stage_logg)
        for t, c in self.coverage.items():
            out[f"goal/coverage95_ok_{t}"] = c["ok"]
        if self.sure_widths:
            out["goal/width95_sure_two_minus_one_logg"] = self.sure_widths["two"] - self.sure_widths["one"]
        out["goal/all_met"] = float(self.all_met)
        return {k: float(v) for k, v in out.items() if math.isfinite(v)}


def _sigma(row, target: str) -> float:
    cell = row.cells.get(target) if row is not None else None
    return cell.value if cell is not None else math.nan


def check(comp: Comparison, goals: Goals = Goals()) -> GoalReport | None:
    """Check the goals on a comparison; ``None`` when it has no image-model row."""
    rows = {r.key: r for r in comp.rows}
    image = rows.get(goals.image_row)
    if image is None:
        return None
    colour = [r for r in comp.rows if r.key.endswith(goals.colour_suffix)]
    checks = []
    for t in TARGETS:
        sigma = _sigma(image, t)
        if not math.isfinite(sigma):
            continue
        std = comp.label_std.get(t, math.nan)
        scored = [(_sigma(r, t), r.label) for r in colour if math.isfinite(_sigma(r, t))]
        best, best_label = min(scored) if scored else (math.nan, "")
        fraction, ratio = sigma / std, sigma / best
        checks.append(TargetCheck(
            target=t, sigma=sigma, label_std=std, best_colour=best, best_colour_method=best_label,
            std_fraction=fraction, colour_ratio=ratio,
            std_goal_met=fraction < goals.max_std_fraction,
            colour_goal_met=ratio <= goals.max_colour_ratio))
    coverage = {}
    for t in TARGETS:
        unc = image.uncertainty.get(t, {})
        if math.isfinite(unc.get("oos/coverage95_ok", math.nan)):
            coverage[t] = {"value": unc["oos/coverage95"], "lo": unc.get("oos/coverage95_lo", math.nan),
                           "hi": unc.get("oos/coverage95_hi", math.nan), "ok": unc["oos/coverage95_ok"]}
    two = rows.get(goals.two_stage_row)
    sure = two.uncertainty.get("logg", {}) if two is not None else {}
    widths = {}
    if all(math.isfinite(sure.get(k, math.nan)) for k in ("oos/width95_sure", "oos/width95_sure_onestage")):
        widths = {"two": sure["oos/width95_sure"], "one": sure["oos/width95_sure_onestage"],
                  "n": sure.get("oos/n_sure", math.nan),
                  "cover_two": sure.get("oos/coverage95_sure", math.nan),
                  "cover_one": sure.get("oos/coverage95_sure_onestage", math.nan)}
    return GoalReport(goals=goals, targets=checks, one_stage_logg=_sigma(image, "logg"),
                      two_stage_logg=_sigma(two, "logg"),
                      two_stage_soft_logg=_sigma(rows.get(goals.two_stage_soft_row), "logg"),
                      coverage=coverage, sure_widths=widths)


def _ratio(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "-"


def _verdict(ok: bool, *values: float) -> str:
    if not all(math.isfinite(v) for v in values):
        return "not checked"
    return "met" if ok else "NOT met"


def to_markdown(report: GoalReport) -> str:
    """The section: a caption, one line per target, the two-stage line."""
    g = report.goals
    caption = (f"How close the image model comes ({g.image_row} row): its sigma below "
               f"{g.max_std_fraction:g} x the label standard deviation, and within "
               f"{g.max_colour_ratio:g} x the best colour baseline")
    header = ["target", "ours", "label std", "ours / label std", "goal", "best colour baseline",
              "ours / best colour", "goal"]
    rows = [[HEADERS[c.target], format_value(c.sigma, c.target),
             format_value(c.label_std, c.target) or "-", _ratio(c.std_fraction),
             _verdict(c.std_goal_met, c.std_fraction),
             f"{c.best_colour_method or '-'} {format_value(c.best_colour, c.target)}",
             _ratio(c.colour_ratio), _verdict(c.colour_goal_met, c.colour_ratio)]
            for c in report.targets]
    lines = [caption, "", markdown_table(header, rows)]
    if math.isfinite(report.two_stage_logg) and math.isfinite(report.one_stage_logg):
        verdict = _verdict(report.two_stage_goal_met, report.two_stage_logg)
        lines += ["", (f"Two-stage logg (Eq. 20, hard classes) {report.two_stage_logg:.3f} dex "
                       f"against one-stage {report.one_stage_logg:.3f} dex: goal (below) {verdict}.")]
        if math.isfinite(report.two_stage_soft_logg):
            below = "below" if report.two_stage_soft_logg < report.one_stage_logg else "not below"
            lines.append(f"The soft mixture of the same heads (not the paper's rule, not part of "
                         f"the goal): {report.two_stage_soft_logg:.3f} dex, {below} the one-stage.")
    if report.coverage:
        parts = [f"{HEADERS[t]} {c['value']:.3f} ({c['lo']:.3f}-{c['hi']:.3f}) "
                 f"{_verdict(bool(c['ok']), c['value'])}" for t, c in report.coverage.items()]
        lines += ["", "95% coverage out of sample inside the binomial 95% range of 0.95 for the "
                      "stars scored: " + "; ".join(parts) + "."]
    if report.sure_widths:
        w = report.sure_widths
        lines.append(f"Two-stage logg 95% width on the {w['n']:.0f} stars the classifier is sure "
                     f"about: {w['two']:.3f} dex (coverage {w['cover_two']:.3f}) against one-stage "
                     f"{w['one']:.3f} dex (coverage {w['cover_one']:.3f}): goal (no wider, coverage "
                     f"not below the binomial range) "
                     f"{_verdict(report.sure_width_goal_met, w['two'], w['one'], w['cover_two'])}.")
    return "\n".join(lines) + "\n"
