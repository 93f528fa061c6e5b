"""Optuna studies of stellarexp: study files, search spaces, study names and exported results.

A *study file* ``stellarexp/studies/<study>.yaml`` is versioned with the code and holds one search space::

    description: XGBoost on the 10 colours (paper Table 3)
    overrides: [stage=baseline, model=xgboost, features=color]   # fixed in every trial
    n_trials: 50
    params:                                                    # Hydra's sweep grammar
      model.params.max_depth: int(interval(1, 10))
      model.params.learning_rate: interval(0.001, 0.5)

Search-space expressions use Hydra's own override grammar (``interval``, ``int(interval)``,
``tag(log, ...)``, ``range``, ``choice`` and comma lists) and are parsed with Hydra's parser;
:func:`parse_search_space` turns them into Optuna distributions. Everything here is independent of
a running Hydra app; the sweeper plugin (``hydra_plugins/stellarexp_sweeper``) drives it.
Optuna is imported only by the functions that need it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException

from stellarexp import home as _home

log = logging.getLogger(__name__)

DEFAULTS_FILE = "defaults.yaml"
"""Maps a config value (``stage.name``) to the default study of ``-m`` without a selection."""

SETTINGS = ("sampler", "seed", "direction", "metric", "n_trials", "pruner")
# user attribute of a trial killed before it reported and run again: it no longer counts
RETRIED_ATTR = "retried"
"""Sweeper options a study file may set (the command line's ``hydra.sweeper.*`` wins)."""


class SweepError(CompactHydraException, ValueError):
    """A study file, search space or sweep request that cannot run (message says why).

    A compact Hydra error: the command line prints the message without a traceback.
    """


# --------------------------------------------------------------------------------------------
# locations


def studies_dir() -> Path:
    """The shipped study files: ``stellarexp/studies/`` inside the installed package (your own:
    ``hydra.sweeper.studies_dir=<folder>``)."""
    return _home.studies_dir()


def results_dir() -> Path:
    """Where best parameters are exported: ``$STELLAREXP_HOME/sweeps/results/``."""
    return _home.home() / "sweeps" / "results"


def default_journal() -> Path:
    """The default Optuna storage: ``$STELLAREXP_HOME/mlruns/optuna/journal.log``."""
    return _home.mlruns_dir() / "optuna" / "journal.log"


# --------------------------------------------------------------------------------------------
# study files


@dataclass
class StudyFile:
    """One study file (``stellarexp/studies/<name>.yaml``).

    Attributes
    ----------
    name : str
        File stem; the first part of the Optuna study name.
    path : pathlib.Path or None
        The file (``None`` for a search space given only on the command line).
    overrides : list of str
        Hydra overrides applied to every trial (``model=xgboost``).
    params : dict
        Config key -> search-space expression (or a fixed value).
    settings : dict
        Values of :data:`SETTINGS` given by the file.
    first_trial : str or None
        Dotted config path (``{target}`` filled in) whose values are enqueued as trial 0 of a new
        study, e.g. the paper's optimum ``model.hparams.{target}``.
    description : str
    """

    name: str
    path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    first_trial: str | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_KNOWN_KEYS = {"description", "overrides", "params", "first_trial", *SETTINGS}


def _read_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    # OmegaConf keeps "1e-3" style scalars and our expressions as written
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # noqa: BLE001 - YAML syntax (yaml.YAMLError) or OmegaConf errors
        detail = " ".join(str(exc).split())
        raise SweepError(f"{path} is not valid YAML ({detail}); fix the file "
                         "(quote values that contain ': ')") from None


def available_studies(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the study files in ``directory`` (default :func:`studies_dir`)."""
    folder = Path(directory or studies_dir())
    return sorted(p.stem for p in folder.glob("*.yaml") if p.name != DEFAULTS_FILE)


def load_study(name: str, directory: str | os.PathLike | None = None) -> StudyFile:
    """Read ``<directory>/<name>.yaml``.

    Parameters
    ----------
    name : str
        Study name (file stem), or a path to a ``.yaml`` file.
    directory : path-like, optional
        Folder of study files (default :func:`studies_dir`).

    Raises
    ------
    SweepError
        Missing file (the message lists the available studies) or malformed content.
    """
    folder = Path(directory or studies_dir())
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
    if not path.is_file():
        raise SweepError(f"no study file {path}; available studies in {folder}: "
                         f"{', '.join(available_studies(folder)) or 'none'}")
    data = _read_yaml(path) or {}
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a study file must be a mapping")
    params = data.get("params") or {}
    overrides = data.get("overrides") or []
    if not isinstance(params, dict) or not params:
        raise SweepError(f"{path}: 'params' must be a non-empty mapping of config key -> expression")
    if isinstance(overrides, dict):
        overrides = [f"{k}={v}" for k, v in overrides.items()]
    return StudyFile(
        name=path.stem, path=path, overrides=[str(o) for o in overrides],
        params={str(k): v for k, v in params.items()},
        settings={k: data[k] for k in SETTINGS if data.get(k) is not None},
        first_trial=data.get("first_trial"), description=str(data.get("description") or ""),
        extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
    )


def _fill(template: str, cfg) -> str:
    """Fill ``{dotted.key}`` fields of ``template`` from ``cfg``."""
    from omegaconf import OmegaConf

    def value(match: re.Match) -> str:
        found = OmegaConf.select(cfg, match.group(1), default=None)
        if found is None:
            raise SweepError(f"'{match.group(1)}' (in {template!r}) is not set in the job config")
        return str(found)

    return re.sub(r"\{([A-Za-z0-9_.]+)\}", value, template)


def default_study(cfg, directory: str | os.PathLike | None = None) -> str | None:
    """The study ``-m`` runs when neither ``sweep=<study>`` nor a grid was given.

    ``<directory>/defaults.yaml`` holds ``select`` (a config key, e.g. ``stage.name``) and
    ``studies`` (value -> study-name template over the job config, e.g.
    ``"{model.name}_{features.name}"``). Returns ``None`` when nothing maps or the mapped
    study file does not exist.
    """
    from omegaconf import OmegaConf

    folder = Path(directory or studies_dir())
    path = folder / DEFAULTS_FILE
    if not path.is_file():
        return None
    spec = _read_yaml(path) or {}
    key = spec.get("select", "stage.name")
    template = (spec.get("studies") or {}).get(str(OmegaConf.select(cfg, key, default=None)))
    if not template:
        return None
    try:
        name = _fill(str(template), cfg)
    except SweepError:
        return None
    return name if (folder / f"{name}.yaml").is_file() else None


# --------------------------------------------------------------------------------------------
# search spaces


@dataclass
class SearchParam:
    """One searched config key.

    Attributes
    ----------
    key : str
        Config key without an override prefix (also the Optuna parameter name).
    prefix : str
        ``""``, ``"+"`` or ``"++"`` as written in the override.
    distribution : optuna.distributions.BaseDistribution
    expression : str
        The expression as written (for logs and the study's metadata).
    labels : list of (value, text) pairs
        For categorical choices: the override text of each choice (keeps Hydra's quoting).
    """

    key: str
    prefix: str
    distribution: Any
    expression: str
    labels: list[tuple[Any, str]] = field(default_factory=list)

    def override(self, value: Any) -> str:
        """The Hydra override that sets this key to ``value`` in a trial."""
        return f"{self.prefix}{self.key}={self.text(value)}"

    def text(self, value: Any) -> str:
        """``value`` written in Hydra's override grammar."""
        for choice, text in self.labels:
            if type(choice) is type(value) and choice == value:
                return text
        return format_value(value)


def quote(text: str) -> str:
    """``text`` as a Hydra override value: as is when plain, else single-quoted and escaped."""
    if re.fullmatch(r"[A-Za-z0-9_./:-]+", text):
        return text
    return "'" + text.replace("'", "\\'") + "'"  # Hydra keeps other backslashes as written


def results_file(directory: str | os.PathLike, study: str) -> Path:
    """``<directory>/<study>.yaml`` with the study name made a safe file name."""
    return Path(directory) / (re.sub(r"[^A-Za-z0-9_.=-]+", "_", study) + ".yaml")


def format_value(value: Any) -> str:
    """A scalar written in Hydra's override grammar (``true``, ``null``, ``0.1``)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_override(line: str):
    """Parse one override with Hydra's grammar (raises :class:`SweepError` with the line)."""
    from hydra.errors import HydraException

    try:
        return _parser().parse_override(line)
    except HydraException as exc:
        raise SweepError(f"cannot parse {line!r}: {exc}") from None


def _prefix(override) -> str:
    return "++" if override.is_force_add() else "+" if override.is_add() else ""


def is_search_override(override) -> bool:
    """True for overrides only an Optuna study can run (``interval``), not a grid."""
    from hydra.core.override_parser.types import ValueType

    return override.value_type == ValueType.INTERVAL_SWEEP


def _check_range(key: str, line: str, values) -> None:
    """A search range must lie inside the parameter's own valid range (:mod:`stellarexp.limits`)."""
    from stellarexp.config import ConfigError
    from stellarexp.limits import check_value, rule_for

    rule = rule_for(key)
    if rule is None:
        return
    for value in values:
        try:
            check_value(key, value, rule)
        except ConfigError as exc:
            raise SweepError(f"{line!r}: the range reaches {exc}; fix the study's search space") from None


def to_param(override) -> SearchParam:
    """Convert a parsed sweep override into a :class:`SearchParam` (an Optuna distribution).

    ``interval(a, b)`` -> float in [a, b]; ``int(interval(a, b))`` -> integer in [a, b];
    ``tag(log, ...)`` -> log scale; ``range(a, b, s)`` -> stepped integer (or float) over the
    values Hydra's range yields (``b`` excluded, as in Hydra); ``choice(...)`` and comma lists
    -> categorical.
    """
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, value = override.key_or_group, override.value()
    line = override.input_line or f"{key}=?"
    tags = set(getattr(value, "tags", ()) or ())
    log_scale = "log" in tags
    try:
        if isinstance(value, IntervalSweep):
            low, high = value.start, value.end
            if isinstance(low, int) and isinstance(high, int):
                dist = IntDistribution(low, high, log=log_scale)
            else:
                dist = FloatDistribution(float(low), float(high), log=log_scale)
            _check_range(key, line, (low, high))
            return SearchParam(key, _prefix(override), dist, line)
        if isinstance(value, RangeSweep):
            values = sorted(override.sweep_iterator())
            if not values:
                raise SweepError(f"{line!r}: the range is empty")
            step = abs(value.step)
            if log_scale:
                raise SweepError(f"{line!r}: Optuna has no log scale with a step; use "
                                 f"tag(log, int(interval(a, b)))")
            _check_range(key, line, (values[0], values[-1]))
            if all(isinstance(v, int) for v in values) and isinstance(value.step, int):
                dist = IntDistribution(values[0], values[-1], step=step)
            else:
                dist = FloatDistribution(float(values[0]), float(values[-1]), step=float(step))
            return SearchParam(key, _prefix(override), dist, line)
        if isinstance(value, ChoiceSweep):
            if log_scale:
                raise SweepError(f"{line!r}: 'log' applies to interval() and range() only")
            values = list(override.sweep_iterator())
            texts = list(override.sweep_string_iterator())
            bad = [v for v in values if not isinstance(v, (str, int, float, bool))]
            if bad:
                raise SweepError(f"{line!r}: choices must be strings or numbers, got {bad!r}")
            _check_range(key, line, [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)])
            return SearchParam(key, _prefix(override), CategoricalDistribution(values), line,
                               labels=list(zip(values, texts)))
    except ValueError as exc:  # Optuna's own check (low > high, log with low <= 0, ...)
        if isinstance(exc, SweepError):
            raise
        raise SweepError(f"{line!r}: {exc}") from None
    raise SweepError(f"{line!r}: a search parameter needs interval(), range(), choice() or a "
                     f"comma list (glob() selects config groups for a grid only)")


def parse_search_space(params: Mapping[str, Any]) -> tuple[dict[str, SearchParam], list[str]]:
    """Parse a study's ``params`` mapping.

    Parameters
    ----------
    params : mapping
        Config key (optionally prefixed ``+``/``++``) -> expression (``"interval(0, 1)"``) or a
        fixed value.

    Returns
    -------
    space : dict
        Key -> :class:`SearchParam` for every swept key.
    fixed : list of str
        Overrides for keys given a single value.
    """
    space: dict[str, SearchParam] = {}
    fixed: list[str] = []
    for key, expr in params.items():
        text = expr if isinstance(expr, str) else format_value(expr)
        override = parse_override(f"{key}={text}")
        if override.is_sweep_override():
            param = to_param(override)
            space[param.key] = param
        else:
            fixed.append(f"{key}={text}")
    return space, fixed


def grid_values(space: Mapping[str, SearchParam]) -> dict[str, list]:
    """The grid of a discrete search space (for ``sampler=grid``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    grid = {}
    for key, param in space.items():
        dist = param.distribution
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[key] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            grid[key] = [dist.low + i * dist.step for i in range(n + 1)]
        else:
            raise SweepError(f"sampler=grid needs discrete parameters; {param.expression!r} is "
                             f"continuous (use range() or choice())")
    return grid


def space_signature(space: Mapping[str, SearchParam]) -> str:
    """Short hash of a search space (names a study defined only on the command line)."""
    text = ";".join(f"{k}:{space[k].distribution!r}" for k in sorted(space))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------
# study names


def check_single_target(cfg, key: str = "target") -> None:
    """Refuse ``target=all`` (or a list): a study optimises one metric of one target."""
    from omegaconf import OmegaConf

    target = OmegaConf.select(cfg, key, default=None) if cfg is not None else None
    if target is None and (cfg is None or key not in cfg):
        return
    if target is None or OmegaConf.is_list(target) or str(target) == "all":
        raise SweepError(
            f"an Optuna sweep tunes one target at a time, got {key}={target}: run one study per "
            f"target, e.g. `{key}=teff`, `{key}=logg` and `{key}=fe_h` (each is its own study)")


def data_identity(cfg, prepare: bool = True) -> str | None:
    """A short identity of the job config's data: ``<data name>-<fingerprint[:10]>``.

    The fingerprint is the dataset's content hash. A synthetic dataset that does not exist yet is
    built first when ``prepare`` (so trials do not race to build it, and the name stays the same
    when the study is resumed); otherwise, or when it cannot be read, the data name and size
    stand in. ``None`` when the config has no ``data`` node.
    """
    from omegaconf import OmegaConf

    data = OmegaConf.select(cfg, "data", default=None) if cfg is not None else None
    if data is None:
        return None
    name = str(data.get("name", "data"))
    fingerprint = None
    try:
        from stellarexp.stages.report import data_fingerprint

        fingerprint = data_fingerprint(data)
        if fingerprint is None and prepare:
            from stellarexp.config import register_resolvers
            from stellarexp.data.table import load_stars

            register_resolvers()
            fingerprint = load_stars(data).fingerprint
    except Exception as exc:  # noqa: BLE001 - naming must not hide the real error of a trial
        log.warning("data fingerprint unavailable (%s: %s); naming the study by data name/size",
                    type(exc).__name__, exc)
    if fingerprint and fingerprint != "unknown":
        return f"{name}-{str(fingerprint)[:10]}"
    size = data.get("size") if "size" in data else None
    return f"{name}-{size}" if size is not None else name


_NAME_PARTS = ("target", "split.name")


def overrides_signature(overrides: Iterable[str], ignore: Iterable[str] = (),
                        ignore_exact: Iterable[str] = ()) -> str | None:
    """Short hash of the overrides that change the objective, ``None`` when there are none.

    Overrides of a key in ``ignore`` or below it (``tracking`` covers ``tracking.uri``), and of a
    key in ``ignore_exact``, are left out: they are named otherwise (target, split, data
    fingerprint, the study's own ``model=...``) or do not change the objective (threads, tracking).
    """
    ignore, exact = tuple(ignore), set(ignore_exact)
    kept = []
    for line in overrides:
        key = parse_override(line).key_or_group
        if key in exact or any(key == i or key.startswith((f"{i}.", f"{i}@")) for i in ignore):
            continue
        kept.append(line.lstrip("+"))
    if not kept:
        return None
    return "o" + hashlib.sha256("\n".join(sorted(kept)).encode()).hexdigest()[:7]


def study_name(study_id: str, cfg=None, data: str | None = None, variant: str | None = None) -> str:
    """``<study>-<target>-<split>-<data identity>[-<variant>]``, leaving out missing parts.

    The study id carries model and features (``xgboost_color``); with target, split, the data
    fingerprint and a hash of any other objective-changing overrides (``variant``, see
    :func:`overrides_signature`) in the name, different objectives never share one study while
    re-running the same command finds the same study.
    """
    from omegaconf import OmegaConf

    parts = [study_id]
    for key in _NAME_PARTS:
        value = OmegaConf.select(cfg, key, default=None) if cfg is not None else None
        if value is not None:
            parts.append(str(value))
    parts += [p for p in (data, variant) if p]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))


def first_trial_params(template: str | None, cfg, space: Mapping[str, SearchParam]) -> dict:
    """Values for trial 0: each searched key's last component looked up under ``template``.

    ``template`` is a dotted config path such as ``model.hparams.{target}`` (the paper's
    optimum). Values outside a parameter's range are left out.
    """
    from omegaconf import OmegaConf

    if not template or cfg is None:
        return {}
    try:
        node = OmegaConf.select(cfg, _fill(template, cfg), default=None)
    except SweepError:
        return {}
    if node is None:
        return {}
    values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    out = {}
    for key, param in space.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf in values and _contains(param.distribution, values[leaf]):
            out[key] = values[leaf]
    return out


def _contains(dist, value) -> bool:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(dist, IntDistribution) and int(value) != value:
        return False
    return dist.low <= value <= dist.high


# --------------------------------------------------------------------------------------------
# results


def rerun_command(overrides: Iterable[str]) -> str:
    """The command line that runs one job with ``overrides`` (the best trial's configuration)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        program = f"python -m {spec.name.removesuffix('.__main__')}"
    else:
        program = f"python {shlex.quote(sys.argv[0])}" if sys.argv and sys.argv[0] else "python"
    return " ".join([program, *(shlex.quote(o) for o in overrides)])


def write_yaml_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as YAML to ``path`` through a temporary file and a rename."""
    import yaml

    from stellarexp.io_utils import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def best_summary(study, space: Mapping[str, SearchParam], base_overrides: list[str],
                 metric: str | None) -> dict | None:
    """What :func:`write_yaml_atomic` exports: best value, parameters, overrides and command
    (secrets in the overrides masked).

    Returns ``None`` while the study has no complete trial.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    best = study.best_trial
    param_overrides = []
    for key, value in best.params.items():
        param = space.get(key)
        param_overrides.append(param.override(value) if param else f"++{key}={value}")
    from stellarexp.tracking.redact import redact_override

    # exported and printed: a secret given on the command line shows as *** (README, Security)
    overrides = [redact_override(o) for o in (*base_overrides, *param_overrides)]
    counts = {s.name.lower(): sum(t.state == s for t in trials)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    # failed trials that were run again (their retry counts instead): not part of n_trials
    counts["retried"] = sum(t.state == TrialState.FAIL and bool(t.user_attrs.get(RETRIED_ATTR)) for t in trials)
    value = float(best.value)
    return {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "metric": metric,
        "best_value": value if math.isfinite(value) else str(value),
        "best_trial": best.number,
        "params": dict(best.params),
        "trials": counts,
        "overrides": overrides,
        "command": rerun_command(overrides),
    }


# --------------------------------------------------------------------------------------------
# inside a job


def current_trial():
    """The Optuna trial of the running Hydra job, or ``None`` outside an Optuna sweep.

    A stage may report intermediate values and honour the sweep's pruner::

        trial = current_trial()
        if trial is not None:
            trial.report(val_loss, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

    The sweeper records a raised ``TrialPruned`` as PRUNED.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().sweeper
    number = sweeper.get("trial_number")
    if number is None or not sweeper.get("study_name"):
        return None
    import optuna

    from hydra_plugins.stellarexp_sweeper import _runtime

    storage = _runtime.open_storage(sweeper.get("storage"))
    study = optuna.load_study(study_name=str(sweeper.study_name), storage=storage,
                              pruner=_runtime.make_pruner(sweeper.get("pruner")))
    trial = study.get_trials(deepcopy=False)[int(number)]
    return optuna.trial.Trial(study, trial._trial_id)
