"""Study files and where a sweep's files go.

A *study file* ``stellarexp/studies/<study>.yaml`` is versioned with the code and holds one search
space::

    description: XGBoost on the 10 colours (paper Table 3)
    overrides: [stage=baseline, model=xgboost, features=color]   # fixed in every trial
    n_trials: 50
    params:                                                    # Hydra's sweep grammar
      model.params.max_depth: int(interval(1, 10))
      model.params.learning_rate: interval(0.001, 0.5)

``defaults.yaml`` beside them maps a config value to the study ``-m`` runs without a selection.
Best parameters are exported to ``$STELLAREXP_HOME/sweeps/results/``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf

from stellarexp import home as _home
from stellarexp.io_utils import atomic_path

DEFAULTS_FILE = "defaults.yaml"
"""Maps a config value (``stage.name``) to the default study of ``-m`` without a selection."""

SETTINGS = ("sampler", "seed", "direction", "metric", "n_trials", "pruner")
"""Sweeper options a study file may set (the command line's ``hydra.sweeper.*`` wins)."""


class SweepError(CompactHydraException, ValueError):
    """A study file, search space or sweep request that cannot run (message says why).

    A compact Hydra error: the command line prints the message without a traceback.
    """




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


def fill_template(template: str, cfg) -> str:
    """Fill ``{dotted.key}`` fields of ``template`` from ``cfg``."""

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
        name = fill_template(str(template), cfg)
    except SweepError:
        return None
    return name if (folder / f"{name}.yaml").is_file() else None

def results_file(directory: str | os.PathLike, study: str) -> Path:
    """``<directory>/<study>.yaml`` with the study name made a safe file name."""
    return Path(directory) / (re.sub(r"[^A-Za-z0-9_.=-]+", "_", study) + ".yaml")


def write_yaml_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as YAML to ``path`` through a temporary file and a rename."""

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
