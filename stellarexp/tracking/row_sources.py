"""Which runs make which rows of the comparison table: the registry of row sources (baselines,
image head, two-stage logg, logg classifier) and the target columns they fill."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stellarexp.constants import LABELS, PAPER_HEAD_METHOD

TARGETS = LABELS  # the table's target columns, in order


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
        The row's cells also take the
        :data:`~stellarexp.tracking.compare.UNCERTAINTY_KINDS` of their run.
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
    only : mapping
        Tag -> value a run must carry to make rows (a run without the tag predates it and
        counts as carrying the value), e.g. the paper's head method for the head row.
    defaults : mapping
        Tag values assumed for runs without the tag (they predate it) when row keys are formed.
    """

    name: str
    stage: str
    key: str = ""
    paper_key: str | None = None
    rows: tuple[RowSpec, ...] = ()
    only: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, str] = field(default_factory=dict)

    def accepts(self, tags: Mapping[str, str]) -> bool:
        """Whether a run with ``tags`` makes rows of this source (see ``only``)."""
        return all(tags.get(k, v) == v for k, v in self.only.items())

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
# (the other uncertainty methods of stage=head have their own table: tracking/uncertainty_methods.py)
# Image stages with side inputs (model.side_inputs, tag side_key, e.g. "_parallax") make rows of
# their own beside the image-only ones (docs/parallax.md); runs from before side inputs read none.
NO_SIDE = {"side_key": ""}
register_row_source(RowSource(name="head", stage="head", key="ours_head{side_key}",
                              only={"head_method": PAPER_HEAD_METHOD}, defaults=NO_SIDE))
register_row_source(RowSource(name="logg_heads", stage="logg_heads", defaults=NO_SIDE, rows=(
    RowSpec("ours_logg_two_stage{side_key}", {"logg": "sigma_hard"}, uncertainty=True),  # Eq. 20, hard
    RowSpec("ours_logg_two_stage_soft{side_key}", {"logg": "sigma_soft"}),  # mixture by the class probability
    RowSpec("ours_logg_above_4{side_key}", {"logg": "sigma_dwarf"}),      # head h1 on logg > threshold
    RowSpec("ours_logg_below_4{side_key}", {"logg": "sigma_giant"}),      # head h2 on logg <= threshold
    RowSpec("ours_logg_perfect{side_key}", {"logg": "sigma_perfect"}),    # true classes in Eq. 20
)))
register_row_source(RowSource(name="logg_classifier", stage="logg_classifier", defaults=NO_SIDE, rows=(
    RowSpec("ours_logg_accuracy{side_key}", {"logg": "accuracy"}, scale=100.0),
    # where the data has a noise-free truth: the same classifier against the true class, the
    # labels' own agreement with it (the most any classifier can reach against labels), and a
    # classifier given noise-free photometry and parallax (evaluate/class_ceiling.py)
    RowSpec("ours_logg_accuracy_truth{side_key}", {"logg": "accuracy_truth"}, scale=100.0),
    RowSpec("logg_label_truth_agreement", {"logg": "label_truth_agreement"}, scale=100.0),
    RowSpec("logg_class_ceiling", {"logg": "ceiling_accuracy_truth"}, scale=100.0),
)))
