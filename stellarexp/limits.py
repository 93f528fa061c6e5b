"""The valid range of every numeric setting a user can give or sweep: one table each for the
stages' settings and the tree models' parameters, and one check.

Used before a job starts (:func:`stellarexp.stages.checks.check_stage`) and before a sweep's
first trial (:func:`stellarexp.tune.search_space.to_param`), so a bad value or search range stops with its
key and the allowed range.
"""

from __future__ import annotations

import math

from stellarexp.config import ConfigError

# key -> (kind, lower bound, lower bound inclusive, upper bound or None)
STAGE_RULES: dict[str, tuple[type, float, bool, float | None]] = {
    "lr": (float, 0.0, False, None),
    "weight_decay": (float, 0.0, True, None),
    "batch_size": (int, 1, True, None),
    "eval_batch_size": (int, 1, True, None),
    "max_epochs": (int, 1, True, None),
    "patience": (int, 0, True, None),
    "warmup_epochs": (float, 0.0, True, None),
    "n_samples": (int, 1, True, None),
    "limit_train_batches": (float, 0.0, False, None),
}


def _describe(kind, low, inclusive, high) -> str:
    text = f"{'an integer' if kind is int else 'a number'} {'>=' if inclusive else '>'} {low:g}"
    return text + (f" and <= {high:g}" if high is not None else "")


def check_value(key: str, value, rule) -> None:
    """Raise :class:`ConfigError` unless ``value`` satisfies ``rule`` (see :data:`STAGE_RULES`)."""
    kind, low, inclusive, high = rule
    if value is None:
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}: must be {_describe(*rule)}") from None
    bad = (not math.isfinite(number) or (number < low if inclusive else number <= low)
           or (high is not None and number > high)
           or (kind is int and (isinstance(value, bool) or number != int(number))))
    if bad:
        raise ConfigError(f"{key}={value!r}: must be {_describe(*rule)}")



_POSITIVE = (float, 0.0, False, None)
_NON_NEGATIVE = (float, 0.0, True, None)
_FRACTION = (float, 0.0, False, 1.0)
# tree-model parameters (XGBoost, LightGBM, CatBoost, scikit-learn) by name, as the libraries
# document them; parameters with special values (max_depth -1, max_features "sqrt") are left out
MODEL_PARAM_RULES: dict[str, tuple[type, float, bool, float | None]] = {
    "n_estimators": (int, 1, True, None), "num_iterations": (int, 1, True, None),
    "iterations": (int, 1, True, None), "learning_rate": _POSITIVE, "eta": _POSITIVE,
    "subsample": _FRACTION, "colsample_bytree": _FRACTION, "colsample_bylevel": _FRACTION,
    "colsample_bynode": _FRACTION, "bagging_fraction": _FRACTION, "feature_fraction": _FRACTION,
    "min_child_weight": _NON_NEGATIVE, "reg_alpha": _NON_NEGATIVE, "reg_lambda": _NON_NEGATIVE,
    "lambda_l1": _NON_NEGATIVE, "lambda_l2": _NON_NEGATIVE, "l2_leaf_reg": _NON_NEGATIVE,
    "gamma": _NON_NEGATIVE, "min_split_gain": _NON_NEGATIVE, "random_strength": _NON_NEGATIVE,
    "bagging_temperature": _NON_NEGATIVE, "num_leaves": (int, 2, True, None),
    "min_child_samples": (int, 1, True, None), "min_data_in_leaf": (int, 1, True, None),
    "min_samples_leaf": (int, 1, True, None), "min_samples_split": (int, 2, True, None),
    "depth": (int, 1, True, 16), "border_count": (int, 1, True, 65535),
}


def rule_for(key: str):
    """The rule of a config key (``stage.lr``, ``model.params.subsample``), or None."""
    parts = str(key).lstrip("+~").split(".")
    if parts[0] == "stage" and len(parts) == 2:
        return STAGE_RULES.get(parts[1])
    if parts[0] == "model" and len(parts) >= 3 and parts[1] in ("params", "hparams"):
        return MODEL_PARAM_RULES.get(parts[-1])
    return None
