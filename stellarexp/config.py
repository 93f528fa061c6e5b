"""Hydra/OmegaConf helpers shared by every command line: resolvers and composition."""

from __future__ import annotations

import os
import socket

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from stellarexp import home as _home
from stellarexp.constants import LABELS


class ConfigError(ValueError):
    """A config value outside what it may take; the message names the key and the allowed range."""


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m``: a grid or an Optuna sweep)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_tag() -> str:
    """``<host>-<pid>`` of this process: part of every job's output folder, so two jobs started
    in the same second (here or on another machine sharing the home) never share one."""
    return f"{socket.gethostname()}-{os.getpid()}"


def help_text(what: str) -> str:
    """Facts the ``--help`` pages quote, from their one source: ``targets`` (the labels) or
    ``studies`` (the shipped Optuna studies and their trial budgets, ``stellarexp/studies/``)."""
    if what == "targets":
        return f"all (default), {', '.join(LABELS)}, or a list such as target=[teff,fe_h]"
    if what == "studies":
        parts = []
        for path in sorted(_home.studies_dir().glob("*.yaml")):
            if path.stem == "defaults":
                continue
            study = yaml.safe_load(path.read_text()) or {}
            parts.append(f"{path.stem} ({study.get('n_trials', '?')} trials)")
        return ", ".join(parts)
    raise ValueError(f"help_text: unknown topic {what!r} (targets or studies)")


def register_resolvers() -> None:
    """Register the ``${stellarexp_home:}``, ``${stellarexp_job:}`` and ``${stellarexp_help:...}``
    resolvers (idempotent)."""
    if not OmegaConf.has_resolver("stellarexp_home"):
        OmegaConf.register_new_resolver("stellarexp_home", lambda: str(_home.home()))
    if not OmegaConf.has_resolver("stellarexp_job"):
        OmegaConf.register_new_resolver("stellarexp_job", job_tag)
    if not OmegaConf.has_resolver("stellarexp_help"):
        OmegaConf.register_new_resolver("stellarexp_help", help_text)


def compose(config_name: str, overrides: list[str] | None = None):
    """Compose ``stellarexp/conf/<config_name>.yaml`` with ``overrides`` outside a Hydra app.

    Parameters
    ----------
    config_name : str
        Primary config file name (without ``.yaml``) in :func:`stellarexp.home.conf_dir`.
    overrides : list of str, optional
        Hydra command-line style overrides (``data.size=tiny``).
    """
    register_resolvers()
    with initialize_config_dir(config_dir=str(_home.conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
