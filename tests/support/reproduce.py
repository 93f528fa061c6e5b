"""Running ``python -m stellarexp.reproduce`` in-process, and the steps a test leaves out."""

from __future__ import annotations

from pathlib import Path


def unregistered_steps(experiment: str) -> list[str]:
    """Overrides leaving out the steps of ``experiment`` whose stage is not registered yet."""
    from stellarexp.config import compose
    from stellarexp.reproduce.plan import build_plan, unregistered

    steps = build_plan(compose("reproduce", [f"experiment={experiment}"]), trainer="cpu")
    return [f"experiment.steps.{s.name}=null" for s in unregistered(steps)]


def reproduce(overrides: list[str], tmp_path: Path):
    from stellarexp import reproduce as rp
    from stellarexp.config import compose

    cfg = compose("reproduce", ["progress=false", "accelerator=cpu", *overrides])
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    out.mkdir()
    return rp.run(cfg, output_dir=out)
