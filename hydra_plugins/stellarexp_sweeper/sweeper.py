"""``StellarexpSweeper``: Hydra's ``-m`` runs a grid or an Optuna study.

What ``-m`` does (DESIGN, Conventions):

* comma lists / ``range()`` / ``glob()`` and no study -> Hydra's own grid (``BasicSweeper``);
* ``sweep=<study>`` (or ``hydra.sweeper.study``) -> that study from ``stellarexp/studies/<study>.yaml``,
  comma lists and ``interval()`` on the command line adding to or replacing its parameters;
* ``interval()`` on the command line without a study -> an Optuna study of those parameters;
* neither -> the default study of the chosen stage and model (``stellarexp/studies/defaults.yaml``), or a
  single job when there is none.

This module stays light (Hydra imports it when scanning plugins, e.g. for ``--help``);
Optuna is imported by :meth:`StellarexpSweeper.sweep` only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper

from stellarexp.tune import naming, search_space, studies

from .config import StellarexpSweeperConf  # noqa: F401  (registers the config schema)

log = logging.getLogger("stellarexp.sweep")

_BUILTIN = {"sampler": "tpe", "seed": None, "direction": "minimize", "metric": None,
            "n_trials": 20, "pruner": None}


class StellarexpSweeper(Sweeper):
    """Hydra sweeper: a grid through ``BasicSweeper`` or an Optuna study through ask/tell.

    Parameters
    ----------
    **options
        The fields of :class:`~hydra_plugins.stellarexp_sweeper.config.StellarexpSweeperConf`.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options
        self.hydra_context = None
        self.config = None
        self.launcher = None
        self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        """Keep Hydra's context; the launcher is created once the kind of sweep is known.

        Unless ``reuse_composition`` is false, the context's config loader composes each set of
        config-group choices once and applies the jobs' value overrides to a copy
        (:class:`~hydra_plugins.stellarexp_sweeper._compose.CachedSweepLoader`): the same job
        configs at a fraction of the cost.
        """
        if self.options.get("reuse_composition", True):
            from hydra.types import HydraContext

            from ._compose import CachedSweepLoader

            loader = CachedSweepLoader(hydra_context.config_loader)
            hydra_context = HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config

    # ----------------------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> Any:
        """Run the grid or the study selected by ``arguments`` (the task overrides)."""
        from hydra.core.override_parser.overrides_parser import OverridesParser


        opts = self.options
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides(list(arguments))
        swept = [o for o in parsed if o.is_sweep_override()]
        fixed = [line for line, o in zip(arguments, parsed) if not o.is_sweep_override()]
        study_key = opts.get("study_key")
        study = opts.get("study") or (self.config.get(study_key) if study_key else None)
        extra_space = dict(opts.get("params") or {})
        continuous = any(search_space.is_search_override(o) for o in swept)
        mode = str(opts.get("mode") or "auto")
        if mode not in ("auto", "grid", "optuna"):
            raise studies.SweepError(f"hydra.sweeper.mode must be auto, grid or optuna, got {mode!r}")

        if mode == "grid" or (mode == "auto" and swept and not (study or continuous or extra_space)):
            return self._grid(arguments)
        if not (study or continuous or extra_space or swept):
            probe = self._compose(fixed)
            study = studies.default_study(probe, self._studies_dir())
            if study is None:
                if mode == "optuna":
                    raise studies.SweepError(
                        f"no sweep=<study> given and no default study for this stage in "
                        f"{self._studies_dir()}; available: {', '.join(studies.available_studies(self._studies_dir()))}")
                log.warning("-m without a grid, a sweep=<study> or a default study for this "
                            "stage: running the single job")
                return self._grid(arguments)
            log.info("no sweep selection: running the default study %s", study)
        return self._optuna(str(study) if study else None, fixed, swept, extra_space)

    # ----------------------------------------------------------------------------------------

    def _grid(self, arguments: list[str]) -> Any:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        grid = BasicSweeper(max_batch_size=self.options.get("max_batch_size"))
        grid.setup(hydra_context=self.hydra_context, task_function=self.task_function,
                   config=self.config)
        return grid.sweep(arguments)

    def _studies_dir(self) -> Path:

        return Path(self.options.get("studies_dir") or studies.studies_dir())

    def _compose(self, overrides: list[str]):
        """The job config ``overrides`` compose to (what a trial sees, before its parameters)."""
        return self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=list(overrides))

    def _metric(self, metric: str | None, probe) -> tuple[str | None, list[str]]:
        """The optimised metric's name and the override that makes the jobs return it."""
        from omegaconf import OmegaConf


        key = self.options.get("metric_key")
        line = [f"{key}={metric}"] if metric and key and _has_key(probe, key) else []
        if metric is None and key and _has_key(probe, key):
            metric = OmegaConf.select(probe, key, default=None) or _default_metric(probe)
        if metric and str(metric).startswith("test/"):
            raise studies.SweepError(f"metric {metric!r}: sweeps optimise a validation metric; the "
                                    f"test subset is for the final report only")
        return metric, line

    def _optuna(self, study: str | None, fixed: list[str], swept: list, extra_space: dict) -> Any:
        from hydra.core.plugins import Plugins

        from stellarexp.tune import loop, samplers  # imports Optuna: only when a study runs

        opts = self.options
        spec = studies.load_study(study, self._studies_dir()) if study else studies.StudyFile(name="")
        cli_keys = {search_space.parse_override(line).key_or_group: line for line in fixed}
        base = list(fixed)
        for line in spec.overrides:  # the study's fixed overrides; the command line may not contradict them
            key = search_space.parse_override(line).key_or_group
            if key in cli_keys and _value(cli_keys[key]) != _value(line):
                raise studies.SweepError(f"study {spec.name} sets {line!r} but the command line "
                                        f"says {cli_keys[key]!r}")
            if key not in cli_keys:
                base.append(line)
        space, space_fixed = search_space.parse_search_space({**spec.params, **extra_space})
        for override in swept:  # command-line sweeps add or replace parameters
            if override.value_type is not None and override.value_type.name == "GLOB_CHOICE_SWEEP":
                raise studies.SweepError(f"{override.input_line!r}: glob() works for a grid only")
            param = search_space.to_param(override)
            space[param.key] = param
        for key in list(space):  # a key fixed on the command line is not searched
            if key in cli_keys:
                log.info("%s fixed by the command line (%s): not searched", key, cli_keys[key])
                del space[key]
        if not space:
            raise studies.SweepError("the search space is empty")
        base += [line for line in space_fixed if search_space.parse_override(line).key_or_group not in cli_keys]

        settings = {**_BUILTIN, **spec.settings,
                    **{k: opts[k] for k in _BUILTIN if opts.get(k) is not None}}
        probe = self._compose(base)
        metric, metric_line = self._metric(settings["metric"], probe)
        if opts.get("target_key"):
            naming.check_single_target(probe, opts["target_key"])
        _add_prefixes(space, probe, spec.path)
        if settings["sampler"] == "grid" and opts.get("n_trials") is None and "n_trials" not in spec.settings:
            settings["n_trials"] = _grid_size(search_space.grid_values(space))

        # the name: study id, target, split, data fingerprint, hash of other objective overrides
        data = naming.data_identity(probe, prepare=bool(opts.get("prepare_data", True)))
        exact = [opts.get("study_key"), opts.get("target_key"),
                 *(search_space.parse_override(line).key_or_group for line in spec.overrides)]
        identity = base + (metric_line if opts.get("metric") is not None else [])
        variant = naming.overrides_signature(identity, opts.get("identity_ignore") or (),
                                             [k for k in exact if k])
        name = opts.get("study_name") or naming.study_name(
            spec.name or _cli_study_id(probe, space), probe, data, variant)
        base += metric_line
        results = studies.results_file(opts.get("results_dir") or studies.results_dir(), name)
        plan = loop.Plan(
            study_name=name, storage=opts.get("storage"), space=space, base_overrides=base,
            sampler=str(settings["sampler"]).lower(), seed=settings["seed"],
            direction=str(settings["direction"]).lower(), metric=metric,
            n_trials=int(settings["n_trials"]), n_jobs=max(1, int(opts.get("n_jobs") or 1)),
            pruner=settings["pruner"], max_consecutive_failures=int(opts.get("max_consecutive_failures") or 0),
            heartbeat_interval=float(opts.get("heartbeat_interval") or 30.0),
            grace_period=float(opts.get("grace_period") or 300.0),
            first_trial=search_space.first_trial_params(spec.first_trial, probe, space),
            results_path=results, mlflow=str(opts.get("mlflow", "auto")).lower() not in ("false", "0", "none"),
            attrs={"study_file": str(spec.path or ""), "overrides": base},
            job_overrides=_quiet_jobs(probe) if opts.get("quiet", True) else [],
        )
        samplers.make_sampler(plan.sampler, plan.seed, space)  # fail early on a bad sampler
        sweep_dir = Path(self.config.hydra.sweep.dir)  # as Hydra's own sweeper does
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # the sweep's record, as Hydra's own sweeper writes it, with secrets masked
        _save_redacted(self.config, sweep_dir / "multirun.yaml")
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
        return loop.run(plan, self, probe)


# Hydra's basic launcher logs "Launching 1 jobs locally" and each job's overrides: two lines a
# trial beside the sweeper's own (the trial's values are in its MLflow run and the storage)
_QUIET_LOGGERS = {"hydra._internal.core_plugins.basic_launcher": logging.WARNING}


def _quiet_jobs(probe) -> list[str]:
    """Keep an Optuna sweep's console at one line per trial: return the overrides that set the
    jobs' console handler to WARNING (when the job logging has one; the job's .log file keeps
    INFO) and silence Hydra's per-job lines in this process."""
    from omegaconf import OmegaConf

    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    if OmegaConf.select(probe, "hydra.job_logging.handlers.console", default=None) is None:
        return []
    return ["++hydra.job_logging.handlers.console.level=WARNING"]


def _save_redacted(config, path: Path) -> None:
    import yaml
    from omegaconf import OmegaConf

    from stellarexp.io_utils import atomic_path
    from stellarexp.tracking.redact import redact

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(redact(OmegaConf.to_container(config, resolve=False, enum_to_str=True)), sort_keys=False))


def _add_prefixes(space: dict, probe, source=None) -> None:
    """Give ``++`` to searched keys that are new leaves of an existing mapping of the config.

    A new leaf spelt like an existing one (``n_estimatorz`` beside ``n_estimators``) is a typo
    that would tune nothing: refused, unless the study writes the ``++`` itself.
    """
    import difflib

    from omegaconf import OmegaConf


    where = f"{source}: " if source else ""
    for key, param in space.items():
        if param.prefix or _has_key(probe, key):
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(probe, parent, default=None) if parent else None
        if not OmegaConf.is_dict(node):
            raise studies.SweepError(f"{where}search parameter {key!r} is not a key of the job "
                                    f"config (and {parent or 'its parent'!r} is no mapping in it)")
        # names used anywhere in the config (model.params is empty; model.hparams.<t> is not)
        names = {k.rpartition(".")[2] for k in _leaf_keys(OmegaConf.to_container(probe, resolve=False))}
        close = [] if leaf in names else difflib.get_close_matches(leaf, sorted(names), n=1,
                                                                   cutoff=0.8)
        if close:
            raise studies.SweepError(
                f"{where}search parameter {key!r} is not a key of the job config; did you mean "
                f"{close[0]!r}? Fix the name, or write '++{key}' to add a new key on purpose")
        param.prefix = "++"


def _leaf_keys(node, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix[:-1]] if prefix else []
    out: list[str] = []
    for k, v in node.items():
        out += _leaf_keys(v, f"{prefix}{k}.")
    return out


def _value(line: str) -> str:
    return line.split("=", 1)[1].strip() if "=" in line else ""


_UNSET = object()


def _has_key(cfg, key: str) -> bool:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=_UNSET, throw_on_missing=False) is not _UNSET


def _default_metric(cfg) -> str | None:
    """The metric a stellarexp job returns for ``optimized_metric: null`` (for labels only)."""
    try:
        from stellarexp.stages import optimized_metric

        return optimized_metric(cfg)
    except Exception:  # noqa: BLE001 - another app, or target=all (refused just after)
        return None


def _grid_size(grid: dict) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def _cli_study_id(cfg, space) -> str:
    """Name of a study given only on the command line: stage/model/features + space hash."""
    from omegaconf import OmegaConf


    parts = [str(OmegaConf.select(cfg, k, default=None)) for k in ("stage.name", "model.name", "features.name")]
    parts = [p for p in parts if p != "None"]
    return "_".join([*parts, "cli"]) + "-" + search_space.space_signature(space)
