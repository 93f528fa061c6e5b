"""stellarexp's Hydra sweeper: Optuna studies (ask/tell) or Hydra's grid, chosen per command.

Select it with ``override hydra/sweeper: stellarexp_optuna`` (the project's settings) or
``override hydra/sweeper: stellarexp`` (the bare schema) in a primary config's defaults list.
Hydra imports every public module of this package when it scans plugins, so nothing here may
import Optuna or MLflow at import time; the Optuna loop lives in the private ``_runtime`` and
``_tracking`` modules, loaded by :meth:`StellarexpSweeper.sweep`. See ``docs/sweeps.md``.
"""
