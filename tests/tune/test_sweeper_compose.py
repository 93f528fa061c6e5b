"""The sweeper's config loader: a job config from a cached composition plus value overrides is
the job config Hydra composes in full, on the project's own ``stellarexp/conf/train.yaml``."""

from __future__ import annotations

import pickle

import pytest
from omegaconf import OmegaConf

from hydra_plugins.stellarexp_sweeper._compose import CachedSweepLoader

MASTER = ["hydra/sweeper=stellarexp_optuna", "hydra.sweeper.n_trials=3", "hydra.sweep.dir=/tmp/sw",
          "hydra.job.config.override_dirname.exclude_keys=[seed]"]


@pytest.fixture(scope="module")
def loaders():
    """Hydra's loader on stellarexp/conf/, the master config of a multirun, and the cached loader."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    from stellarexp.config import register_resolvers
    from stellarexp.home import conf_dir

    register_resolvers()
    hydra_loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(conf_dir())))
    master = hydra_loader.load_configuration("train", [*MASTER, "target=teff"], RunMode.MULTIRUN)
    return hydra_loader, master, CachedSweepLoader(hydra_loader)


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)


def trial(x: float, number: int, *extra: str) -> list[str]:
    """A trial's overrides as the sweeper writes them: study, parameter, bookkeeping."""
    return ["data=table", "data.path=/tmp/stars.csv", "target=teff", *extra, f"++stage.x={x}",
            "seed=7", f"hydra.sweeper.trial_number={number}", "tracking.parent_run_id=abc",
            "++tracking.tags.optuna_study='study name, with comma'",
            f"++tracking.tags.optuna_trial={number}", "++tracking.config_artifacts=false"]


def test_value_overrides_on_a_cached_composition_equal_a_full_one(loaders):
    hydra_loader, master, cached = loaders
    runs = [trial(0.5, 0), trial(-1.25, 1), trial(2.0, 2, "+model.params.gamma=0.3")]
    for overrides in runs:
        full = hydra_loader.load_sweep_config(master, overrides)
        fast = cached.load_sweep_config(master, overrides)
        assert _plain(fast) == _plain(full)
        assert OmegaConf.is_struct(fast) and not OmegaConf.is_readonly(fast.hydra)
    assert (cached.misses, cached.hits, cached.full) == (1, 2, 0)  # one composition for three
    fast = cached.load_sweep_config(master, runs[1])
    assert fast.stage.x == -1.25 and fast.tracking.tags.optuna_trial == 1
    assert "gamma" not in fast.model.params  # trial 2's value did not leak into the cache
    # what Hydra derives from the overrides: the task list in order, the dirname without seed
    assert list(fast.hydra.overrides.task) == [o for o in runs[1] if not o.startswith("hydra.")]
    assert list(fast.hydra.overrides.hydra) == [*MASTER, "hydra.sweeper.trial_number=1"]
    assert "seed" not in fast.hydra.job.override_dirname
    assert fast.hydra.job.override_dirname == hydra_loader.load_sweep_config(
        master, runs[1]).hydra.job.override_dirname
    with pytest.raises(Exception, match="nope"):  # still a struct config: no new keys
        fast.stage.nope = 1


def test_group_choices_are_composed_once_each(loaders):
    hydra_loader, master, _ = loaders
    cached = CachedSweepLoader(hydra_loader)
    # a group choice anywhere in the list (here after values) selects the composition
    lists = [["++model.params.max_depth=3", "model=lightgbm", "target=teff"],
             ["++model.params.max_depth=4", "model=xgboost", "target=teff"],
             ["++model.params.max_depth=5", "model=lightgbm", "target=teff"]]
    for overrides in lists:
        assert _plain(cached.load_sweep_config(master, overrides)) == \
            _plain(hydra_loader.load_sweep_config(master, overrides))
    assert (cached.misses, cached.hits) == (2, 1)
    assert cached.load_sweep_config(master, lists[0]).model.name == "lightgbm"


def test_what_it_cannot_reproduce_goes_through_hydra(loaders):
    hydra_loader, master, _ = loaders
    cached = CachedSweepLoader(hydra_loader)
    for overrides in (["target=teff", "~evaluate"],                 # a deletion
                      ["target=teff", "hydra.runtime.version=0"],   # a field Hydra sets
                      ["target=teff", "++hydra.job.env_set.FOO=1"]):
        assert _plain(cached.load_sweep_config(master, overrides)) == \
            _plain(hydra_loader.load_sweep_config(master, overrides))
    assert (cached.full, cached.misses, cached.hits) == (3, 0, 0)


def test_errors_are_hydras(loaders):
    hydra_loader, master, cached = loaders
    for overrides, message in ((["nokey=1"], "Could not override 'nokey'"),
                               (["+target=logg"], "Could not append to config"),
                               (["model=nope"], "Could not find 'model/nope'")):
        errors = []
        for loader in (hydra_loader, cached):
            with pytest.raises(Exception, match=message) as info:
                loader.load_sweep_config(master, overrides)
            errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1]


def test_pickles_without_its_cache(loaders):
    _, master, cached = loaders
    cached.load_sweep_config(master, trial(0.1, 9))
    clone = pickle.loads(pickle.dumps(cached))
    assert clone._bases == {} and clone.get_search_path() is not None
    assert clone.load_sweep_config(master, trial(0.1, 9)).stage.x == 0.1
