"""The plan of ``python -m stellarexp.reproduce``: the steps of an experiment config, checked.

An experiment (``stellarexp/conf/experiment/<name>.yaml``) lists its steps in order under ``steps``; each
step is one stage of ``stellarexp.train`` with its overrides (or the built-in ``data`` step),
``refs`` that pin an input to the run of an earlier step (``stage.backbone.run_id: backbone``)
and, for the report, ``collect: true`` (its ``stage.run_ids`` are every earlier step's run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.errors import CompactHydraException
from omegaconf import OmegaConf

from stellarexp import stages

DATA_STAGE = "data"
"""The built-in step that simulates (synthetic) and builds the dataset file when absent."""


class ReproduceError(CompactHydraException, RuntimeError):
    """An experiment that cannot run; the message says which step and what to do."""


@dataclass
class Step:
    """One step of the plan.

    Attributes
    ----------
    name : str
        The step's key in ``experiment.steps`` (unique; tags and run names use it).
    stage : str
        ``data`` or a stage registered in :data:`stellarexp.stages.STAGES`.
    overrides : list of str
        Overrides of ``stellarexp/conf/train.yaml`` (experiment-wide ones first, then the step's own).
    refs : dict
        Config key -> name of an earlier step whose MLflow run id the key receives.
    collect : bool
        Give the job ``stage.run_ids``: the runs of every earlier step (the report).
    """

    name: str
    stage: str
    overrides: list[str] = field(default_factory=list)
    refs: dict[str, str] = field(default_factory=dict)
    collect: bool = False

    @property
    def own_overrides(self) -> list[str]:
        """The overrides that are the step's own (for the printed plan)."""
        return [o for o in self.overrides if not o.startswith(("trainer=",))]


def resolve_trainer(choice: str) -> str:
    """``auto`` -> ``gpu`` when CUDA is available, else ``cpu``; other names pass through."""
    if str(choice) != "auto":
        return str(choice)
    try:
        import torch
    except ImportError:
        return "cpu"
    return "gpu" if torch.cuda.is_available() else "cpu"


def build_plan(cfg, trainer: str | None = None) -> list[Step]:
    """The steps of ``cfg.experiment`` in order, their references checked.

    Parameters
    ----------
    cfg : omegaconf.DictConfig
        The composed ``stellarexp/conf/reproduce.yaml``.
    trainer : str, optional
        The trainer config every step gets (default: :func:`resolve_trainer` of ``cfg.accelerator``).

    Raises
    ------
    ReproduceError
        A step without a stage, a reference to a step that does not come before it, or an
        unknown step option.
    """
    exp = cfg.experiment
    trainer = trainer or resolve_trainer(cfg.accelerator)
    common = [f"trainer={trainer}", *[str(o) for o in exp.get("overrides") or []]]
    steps: list[Step] = []
    for name, node in (exp.get("steps") or {}).items():
        if node is None:  # removed with experiment.steps.<name>=null
            continue
        spec = OmegaConf.to_container(node, resolve=True)
        unknown = set(spec) - {"stage", "overrides", "refs", "collect"}
        if unknown:
            raise ReproduceError(f"experiment '{exp.name}' step '{name}': unknown option(s) "
                                 f"{sorted(unknown)}; a step has stage, overrides, refs, collect")
        stage = spec.get("stage")
        if not stage:
            raise ReproduceError(f"experiment '{exp.name}' step '{name}' names no stage; "
                                 f"add `stage: <name>` (or `stage: {DATA_STAGE}`)")
        refs = {str(k): str(v) for k, v in (spec.get("refs") or {}).items()}
        earlier = {s.name for s in steps}
        for key, target in refs.items():
            if target not in earlier:
                raise ReproduceError(
                    f"experiment '{exp.name}' step '{name}': ref {key} -> '{target}' must name a "
                    f"step listed before it (earlier steps: {sorted(earlier) or 'none'})")
        own = [str(o) for o in spec.get("overrides") or []]
        overrides = common + own if stage == DATA_STAGE else [*common, f"stage={stage}", *own]
        steps.append(Step(str(name), str(stage), overrides, refs, bool(spec.get("collect"))))
    if not steps:
        raise ReproduceError(f"experiment '{exp.name}' has no steps")
    return steps


def unregistered(steps: list[Step]) -> list[Step]:
    """Steps whose stage is neither ``data`` nor registered in :mod:`stellarexp.stages`."""
    return [s for s in steps if s.stage != DATA_STAGE and s.stage not in stages.STAGES]


def check_registered(steps: list[Step], experiment: str) -> None:
    """Raise :class:`ReproduceError` naming every step whose stage is not registered."""
    missing = unregistered(steps)
    if missing:
        names = ", ".join(f"'{s.name}' (stage={s.stage})" for s in missing)
        raise ReproduceError(
            f"experiment '{experiment}': step(s) {names} use a stage that is not registered "
            f"(registered: {', '.join(sorted(stages.STAGES))}). Register the stage in "
            "stellarexp/stages/__init__.py, or leave the step out with "
            + " ".join(f"experiment.steps.{s.name}=null" for s in missing))
