"""Optuna samplers and pruners by name (``hydra.sweeper.sampler``, ``hydra.sweeper.pruner``)."""

from __future__ import annotations

from collections.abc import Mapping

import optuna

from stellarexp.tune.search_space import SearchParam, grid_values
from stellarexp.tune.studies import SweepError


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` (allowed only inside ``optimize``).

    Our loop ends at ``n_trials``, the grid's size unless given.
    """
    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(name: str, seed: int | None, space: Mapping[str, SearchParam]):
    """Build the sampler ``name`` (tpe, random, gp, cmaes, qmc, grid)."""
    samplers = optuna.samplers
    name = str(name or "tpe").lower()
    if name == "tpe":
        # constant liar: trials of one batch (or of other workers) still running repel new ones
        return samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return samplers.RandomSampler(seed=seed)
    if name == "gp":
        return samplers.GPSampler(seed=seed)
    if name == "qmc":
        return samplers.QMCSampler(seed=seed, scramble=seed is not None)
    if name == "grid":
        return _GridSampler(grid_values(space), seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  # Optuna's CMA-ES needs the separate `cmaes` package
        except ImportError:
            raise SweepError("sampler=cmaes needs the `cmaes` package (pip install cmaes)") from None
        return samplers.CmaEsSampler(seed=seed)
    raise SweepError(f"unknown sampler {name!r}; use tpe, random, gp, cmaes, qmc or grid")


def make_pruner(name: str | None):
    """Build the pruner ``name`` (none, median, percentile, hyperband, halving)."""
    pruners = optuna.pruners
    name = str(name or "none").lower()
    table = {"none": pruners.NopPruner, "median": pruners.MedianPruner,
             "percentile": lambda: pruners.PercentilePruner(25.0),
             "hyperband": pruners.HyperbandPruner, "halving": pruners.SuccessiveHalvingPruner,
             "successive_halving": pruners.SuccessiveHalvingPruner}
    if name not in table:
        raise SweepError(f"unknown pruner {name!r}; use {', '.join(table)}")
    return table[name]()


