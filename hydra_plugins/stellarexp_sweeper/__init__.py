"""stellarexp's Hydra sweeper: Optuna studies (ask/tell) or Hydra's grid, chosen per command.

Select it with ``override hydra/sweeper: stellarexp_optuna`` (the project's settings) or
``override hydra/sweeper: stellarexp`` (the bare schema) in a primary config's defaults list.
Hydra imports every public module of this package when it scans plugins, so nothing here may
import Optuna or MLflow at import time. The plugin is a thin adapter: the sweep engine (study
files, search spaces, storages and locks, the ask/tell loop, pruning, the MLflow parent run)
is :mod:`stellarexp.tune`, whose Optuna parts :meth:`StellarexpSweeper.sweep` loads when a study
runs. See ``docs/sweeps.md``.
"""
