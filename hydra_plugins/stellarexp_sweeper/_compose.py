"""Job configs of a sweep without re-composing the defaults list for every job.

Hydra's launchers build each job's config with ``config_loader.load_sweep_config(master,
overrides)``: a full composition (defaults list, every config file, schema merges) although the
trials of a study differ only in a few plain values. :class:`CachedSweepLoader` wraps the
loader: it composes once per distinct set of config-group overrides (``model=...``,
``hydra/launcher=...``) and applies the value overrides (``key=v``, ``+key=v``, ``++key=v``) to
a copy with Hydra's own override code, in the command line's order. That is what a full
composition does, because config-group choices decide the defaults list while value overrides
are applied, in order, after composition (they cannot change the defaults list: its
interpolations see group choices only). The Hydra fields a composition derives from the
overrides (``hydra.overrides.task`` / ``.hydra``, ``hydra.job.override_dirname``,
``hydra.runtime.cwd``) are then set exactly as Hydra sets them.

Anything the shortcut cannot reproduce exactly goes through the full composition: a sweep
value, a deletion (``~key``), a packaged value override, ``hydra.searchpath`` (in the command
line or the primary config), an override of a field Hydra sets itself after the overrides
(``hydra.runtime``, ``hydra.overrides``, ``hydra.job.{env_copy,env_set,config_name}``) or a
Hydra version without the internals used here. Private module (Hydra's plugin scan skips
``_`` names).
"""

from __future__ import annotations

import copy
import os
import pickle
from collections import OrderedDict
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

try:  # Hydra internals: the exact code a composition runs; without them, no shortcut
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

    _apply_overrides = ConfigLoaderImpl._apply_overrides_to_config
except (ImportError, AttributeError):  # pragma: no cover - another Hydra version
    _apply_overrides = get_overrides_dirname = None

# Hydra fields a composition sets after applying the overrides (or, for the search path, uses
# before composing): an override at, above or below one of them is composed in full.
# (hydra.job.override_dirname is recomputed below after the values, as Hydra does.)
_DERIVED = ("hydra.searchpath", "hydra.runtime", "hydra.overrides", "hydra.job.env_copy",
            "hydra.job.env_set", "hydra.job.config_name")


def _touches_derived(key: str) -> bool:
    return any(key == d or key.startswith(d + ".") or d.startswith(key + ".") for d in _DERIVED)


class CachedSweepLoader(ConfigLoader):
    """A :class:`~hydra.core.config_loader.ConfigLoader` whose ``load_sweep_config`` composes
    each set of config-group overrides once; every other method is the wrapped loader's.

    Parameters
    ----------
    loader : ConfigLoader
        Hydra's config loader (``hydra_context.config_loader``).
    max_entries : int
        Compositions kept (least recently used dropped first).
    """

    def __init__(self, loader: ConfigLoader, max_entries: int = 8):
        self.loader = loader
        self.max_entries = max_entries
        self._bases: OrderedDict = OrderedDict()
        self._parsed: dict[str, Any] = {}
        self._groups: dict[str, bool] = {}
        self.hits = self.misses = self.full = 0

    # the pickled form (a launcher sending jobs to other processes) carries no cache
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_bases=OrderedDict(), _parsed={}, _groups={})
        return state

    # -- the shortcut ---------------------------------------------------------------------

    def load_sweep_config(self, master_config: DictConfig,
                          sweep_overrides: list[str]) -> DictConfig:
        """The job config of ``sweep_overrides``, equal to Hydra's full composition."""
        split = self._split(master_config, list(sweep_overrides))
        if split is None:
            self.full += 1
            return self.loader.load_sweep_config(master_config, sweep_overrides)
        groups, values, parsed = split
        key = (id(master_config), tuple(o.input_line for o in groups))
        entry = self._bases.get(key)
        if entry is None or entry[0] is not master_config:
            self.misses += 1
            # the group overrides alone (values are applied below, once, in their order)
            base = self.loader.load_configuration(
                config_name=master_config.hydra.job.config_name,
                overrides=[o.input_line for o in groups], run_mode=RunMode.RUN)
            try:  # a pickle round trip copies a config ~5x faster than deepcopy
                entry = (master_config, pickle.dumps(base, protocol=pickle.HIGHEST_PROTOCOL))
            except Exception:  # noqa: BLE001 - a value that does not pickle: deepcopy it
                entry = (master_config, base)
            self._bases[key] = entry
            while len(self._bases) > self.max_entries:
                self._bases.popitem(last=False)
        else:
            self.hits += 1
            self._bases.move_to_end(key)
        cfg = pickle.loads(entry[1]) if isinstance(entry[1], bytes) else copy.deepcopy(entry[1])
        _apply_overrides(values, cfg)
        hydra = cfg.hydra
        hydra.overrides.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
        hydra.overrides.task = [o.input_line for o in parsed if not o.is_hydra_override()]
        hydra.runtime.cwd = os.getcwd()
        job_cfg = hydra.job.config.override_dirname
        hydra.job.override_dirname = get_overrides_dirname(
            overrides=[o for o in parsed if not o.is_hydra_override()],
            kv_sep=job_cfg.kv_sep, item_sep=job_cfg.item_sep, exclude_keys=job_cfg.exclude_keys)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)  # as Hydra does
        return cfg

    def _split(self, master_config: DictConfig, sweep_overrides: list[str]):
        """``(group overrides, value overrides, all)`` parsed, or ``None``: compose in full."""
        if _apply_overrides is None or get_overrides_dirname is None:
            return None
        if OmegaConf.select(master_config, "hydra.searchpath", default=None):
            return None  # the search path may change which groups exist
        repo = getattr(self.loader, "repository", None)
        if repo is None:
            return None
        groups, values, parsed = [], [], []
        for line in [*_master_overrides(master_config), *sweep_overrides]:
            override = self._parse(line)
            if override is None or override.is_sweep_override():
                return None
            key = override.key_or_group
            if key not in self._groups:
                self._groups[key] = bool(repo.group_exists(key))
            if self._groups[key] and not isinstance(override.value(), dict):
                groups.append(override)  # decides the defaults list
            elif override.is_delete() or override.package is not None or _touches_derived(key):
                return None
            else:
                values.append(override)
            parsed.append(override)
        return groups, values, parsed

    def _parse(self, line: str):
        if line not in self._parsed:
            if len(self._parsed) > 4096:  # each trial brings new lines: keep the memory bounded
                self._parsed.clear()
            try:
                (self._parsed[line],) = OverridesParser.create().parse_overrides([line])
            except Exception:  # noqa: BLE001 - the full composition reports it
                return None
        return self._parsed[line]

    # -- the rest of the interface: the wrapped loader's ------------------------------------

    def load_configuration(self, *args, **kwargs) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self):
        return self.loader.get_search_path()

    def get_sources(self):
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args, **kwargs) -> list[str]:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args, **kwargs) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # e.g. ``repository``, used by parsers
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


def _master_overrides(master_config: DictConfig) -> list[str]:
    """The Hydra overrides of the command line, which every job's composition starts from."""
    return list(OmegaConf.to_container(master_config.hydra.overrides.hydra))
