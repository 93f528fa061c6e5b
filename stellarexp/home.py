"""Where stellarexp keeps its data, tracking store and Hydra outputs.

``STELLAREXP_HOME`` (environment) wins; otherwise the repository root of a source checkout
(the directory holding ``pyproject.toml`` next to the package), else ``~/.stellarexp``.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def source_root() -> Path | None:
    """Return the repository root when running from a source checkout, else ``None``."""
    root = _PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file():
        return root
    return None


def home() -> Path:
    """Return the stellarexp home directory (created if missing).

    Returns
    -------
    pathlib.Path
        Absolute path of ``$STELLAREXP_HOME``, the checkout root, or ``~/.stellarexp``.
    """
    env = os.environ.get("STELLAREXP_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        path = source_root() or Path.home() / ".stellarexp"
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Return ``$STELLAREXP_HOME/data`` (surveys, datasets, download cache)."""
    return home() / "data"


def mlruns_dir() -> Path:
    """Return ``$STELLAREXP_HOME/mlruns`` (MLflow database, artifacts, Optuna storage)."""
    return home() / "mlruns"


def outputs_dir() -> Path:
    """Return ``$STELLAREXP_HOME/outputs`` (Hydra run directories)."""
    return home() / "outputs"


def conf_dir() -> Path:
    """Return the directory of the Hydra configuration groups, shipped inside the package
    (``stellarexp/conf``). Add your own with Hydra's search path (README, "Your own configs")."""
    return _PACKAGE_DIR / "conf"


def studies_dir() -> Path:
    """Return the directory of the shipped Optuna study files (``stellarexp/studies``)."""
    return _PACKAGE_DIR / "studies"
