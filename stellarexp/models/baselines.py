"""Tree-model baselines of the paper's section 4.4: a factory and native-format persistence.

One regressor per target. Hyperparameters come from ``stellarexp/conf/hparams/<model>_<features>.yaml``
(the paper's optimal values, Tables 3-6) merged with ``model.params``; the library is imported
only when its model is built or loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
from sklearn.ensemble import RandomForestRegressor

from stellarexp.io_utils import atomic_path

MODELS: tuple[str, ...] = ("xgboost", "lightgbm", "catboost", "random_forest")

SUFFIX = {"xgboost": ".ubj", "lightgbm": ".txt", "catboost": ".cbm", "random_forest": ".joblib"}
"""Native file format per model: XGBoost UBJSON, LightGBM text model, CatBoost binary, and
joblib for scikit-learn (its documented persistence)."""

# LightGBM aliases in the paper's Table 4 -> the scikit-learn API's own argument. LightGBM keeps
# the main name when an alias is also given, so a user's override of the alias would be
# silently ignored; mapping them makes one name per parameter.
_LGBM_ALIASES = {
    "lambda_l1": "reg_alpha",
    "lambda_l2": "reg_lambda",
    "min_data_in_leaf": "min_child_samples",
    "num_iterations": "n_estimators",
}


def _lightgbm_params(params: dict) -> dict:
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in params.items():
        canon = _LGBM_ALIASES.get(key, key)
        if canon in out and out[canon] != value:
            raise ValueError(
                f"LightGBM parameters {origin[canon]!r}={out[canon]} and {key!r}={value} are the "
                f"same parameter ({canon}); give only one"
            )
        out[canon] = value
        origin[canon] = key
    return out


def make_regressor(name: str, params: dict | None = None, *, seed: int = 0, n_jobs: int = 2):
    """Build an unfitted regressor.

    Parameters
    ----------
    name : {"xgboost", "lightgbm", "catboost", "random_forest"}
    params : dict, optional
        Library hyperparameters (the paper's names are accepted).
    seed : int
        Random seed passed to the library.
    n_jobs : int
        Threads the library may use.

    Returns
    -------
    object
        A scikit-learn style estimator (``fit``/``predict``).
    """
    params = dict(params or {})
    if name == "xgboost":
        from xgboost import XGBRegressor

        params.setdefault("tree_method", "hist")
        return XGBRegressor(**params, random_state=seed, n_jobs=n_jobs)
    if name == "lightgbm":
        from lightgbm import LGBMRegressor

        params = _lightgbm_params(params)
        params.setdefault("verbose", -1)
        return LGBMRegressor(**params, random_state=seed, n_jobs=n_jobs)
    if name == "catboost":
        from catboost import CatBoostRegressor

        params.setdefault("verbose", False)
        # no catboost_info/ folder in the working directory
        params.setdefault("allow_writing_files", False)
        return CatBoostRegressor(**params, random_seed=seed, thread_count=n_jobs)
    if name == "random_forest":
        return RandomForestRegressor(**params, random_state=seed, n_jobs=n_jobs)
    raise ValueError(f"unknown baseline model {name!r}; choose one of {MODELS}")


def save_model(model, name: str, path) -> Path:
    """Write a fitted regressor in its library's native format.

    ``path`` gets the suffix of :data:`SUFFIX` ``[name]``; the written path is returned.
    """
    if name not in SUFFIX:
        raise ValueError(f"unknown baseline model {name!r}; choose one of {MODELS}")
    path = Path(path).with_suffix(SUFFIX[name])
    # through a temporary file (named with the same suffix: the libraries pick the format from it)
    with atomic_path(path, keep_suffix=True) as tmp:
        if name == "xgboost":
            model.save_model(str(tmp))
        elif name == "lightgbm":
            model.booster_.save_model(str(tmp))
        elif name == "catboost":
            model.save_model(str(tmp))
        elif name == "random_forest":
            joblib.dump(model, tmp)
    return path


def load_model(path, name: str | None = None, *, trusted: bool = False):
    """Load a regressor written by :func:`save_model`; the result has ``predict(X)``.

    XGBoost, LightGBM and CatBoost files are data. A random forest is a joblib file, i.e. a
    pickle (scikit-learn has no code-free format, and skops would load torch into every
    baseline job): it loads only with ``trusted=True``, for files from your own store.

    Parameters
    ----------
    path : path-like
        Model file.
    name : str, optional
        Model family; inferred from the suffix when omitted.
    trusted : bool
        Allow loading a pickled (random-forest) model.

    Raises
    ------
    PermissionError
        A random-forest file without ``trusted=True``.
    """
    path = Path(path)
    if name is None:
        by_suffix = {v: k for k, v in SUFFIX.items()}
        if path.suffix not in by_suffix:
            raise ValueError(f"cannot tell the model family of {path}; pass name=")
        name = by_suffix[path.suffix]
    if name == "xgboost":
        from xgboost import XGBRegressor

        model = XGBRegressor()
        model.load_model(str(path))
        return model
    if name == "lightgbm":
        import lightgbm

        return lightgbm.Booster(model_file=str(path))
    if name == "catboost":
        from catboost import CatBoostRegressor

        return CatBoostRegressor().load_model(str(path))
    if name == "random_forest":
        if not trusted:
            raise PermissionError(f"{path} is a joblib pickle, which can run code when loaded; load it "
                                  "only from a store you trust: load_model(path, trusted=True)")

        return joblib.load(path)
    raise ValueError(f"unknown baseline model {name!r}; choose one of {MODELS}")
