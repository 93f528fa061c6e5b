"""Search spaces: Hydra's sweep grammar turned into Optuna distributions.

Search-space expressions use Hydra's own override grammar (``interval``, ``int(interval)``,
``tag(log, ...)``, ``range``, ``choice`` and comma lists) and are parsed with Hydra's parser;
:func:`parse_search_space` turns them into Optuna distributions. Optuna is imported only by the
functions that need it (``--help`` and the baselines stay light).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, ValueType
from hydra.errors import HydraException
from omegaconf import OmegaConf

from stellarexp.config import ConfigError
from stellarexp.limits import check_value, rule_for
from stellarexp.tune.studies import SweepError, fill_template


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



def format_value(value: Any) -> str:
    """A scalar written in Hydra's override grammar (``true``, ``null``, ``0.1``)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parser():
    return OverridesParser.create()


def parse_override(line: str):
    """Parse one override with Hydra's grammar (raises :class:`SweepError` with the line)."""
    try:
        return _parser().parse_override(line)
    except HydraException as exc:
        raise SweepError(f"cannot parse {line!r}: {exc}") from None


def _prefix(override) -> str:
    return "++" if override.is_force_add() else "+" if override.is_add() else ""


def is_search_override(override) -> bool:
    """True for overrides only an Optuna study can run (``interval``), not a grid."""
    return override.value_type == ValueType.INTERVAL_SWEEP


def _check_range(key: str, line: str, values) -> None:
    """A search range must lie inside the parameter's own valid range (:mod:`stellarexp.limits`)."""

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


def first_trial_params(template: str | None, cfg, space: Mapping[str, SearchParam]) -> dict:
    """Values for trial 0: each searched key's last component looked up under ``template``.

    ``template`` is a dotted config path such as ``model.hparams.{target}`` (the paper's
    optimum). Values outside a parameter's range are left out.
    """
    if not template or cfg is None:
        return {}
    try:
        node = OmegaConf.select(cfg, fill_template(template, cfg), default=None)
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


