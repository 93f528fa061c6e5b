"""The package as an MLflow pyfunc model: log it, and read a logged one back as data.

:func:`log_package` logs a package folder (:mod:`stellarexp.models.package_format`) as a pyfunc
model of the active run (and registers it); :class:`StellarModel` is its
``mlflow.pyfunc.PythonModel``, running a :class:`~stellarexp.models.package_predictor.Predictor`.
:func:`load` reads a logged package as data only (no unpickling, no code from the model
directory); ``mlflow.pyfunc.load_model`` works too, for stores you trust (it unpickles
``python_model.pkl``). Both need ``stellarexp`` importable.

:class:`StellarModel` must stay defined in this module: MLflow cloudpickles the instance into
``python_model.pkl``, which names the class by module path (``stellarexp.models.packaged``), so
already-logged models load only while the class lives here.

Imports mlflow (the PythonModel base) at import time and torch when a package is loaded: import
this module only where a package is built or used.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from stellarexp.models.package_format import ARTIFACT_KEY, IMAGE_SHAPE, PackageError
from stellarexp.models.package_predictor import Predictor


class StellarModel(mlflow.pyfunc.PythonModel):
    """``mlflow.pyfunc`` face of a package: ``predict`` takes cutouts ``[N, 5, 48, 48]``.

    Params (``predict(..., params={...})``): ``n_samples`` (head draws per star), ``seed``.
    The returned DataFrame has the columns of :attr:`Predictor.columns`; its out-of-range flag
    checks the predictions only (the predict stage adds the input colours).
    """

    def load_context(self, context):
        self.predictor = Predictor(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input, params=None):
        params = dict(params or {})
        images = model_input
        if isinstance(model_input, pd.DataFrame):
            raise PackageError("give the cutouts as a float32 array [N, 5, 48, 48], "
                               "not a DataFrame")
        return self.predictor.predict(images, n_samples=params.get("n_samples"),
                                      seed=int(params.get("seed") or 0))


def signature(targets: Sequence[str], n_samples: int):
    """The pyfunc signature: a float32 tensor of cutouts in, one row per star out.

    Parameters
    ----------
    targets : sequence of str
        The head's targets, in order.
    n_samples : int
        Default of the ``n_samples`` param.

    Returns
    -------
    mlflow.models.signature.ModelSignature
    """
    cols = [ColSpec("double", f"{t}_{s}") for t in targets for s in ("mean", "std", "lo", "hi")]
    cols += [ColSpec("double", "logg_class_prob"), ColSpec("double", "logg_prob_above"),
             ColSpec("boolean", "ood"), ColSpec("double", "ood_score"),
             ColSpec("string", "ood_reasons"), ColSpec("string", "uncertainty_method")]
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *IMAGE_SHAPE))]),
        outputs=Schema(cols),
        params=ParamSchema([ParamSpec("n_samples", "long", int(n_samples)),
                            ParamSpec("seed", "long", 0)]))


def requirements() -> list[str]:
    """pip requirements written beside the model (explicit: inferring them loads the model)."""
    out = []
    for name in ("stellarexp", "torch", "timm", "lightning", "mlflow", "numpy", "pandas",
                 "scipy", "crepes"):
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def log_package(folder, *, name: str = "model", registered_model_name: str | None = None,
                input_example=None):
    """Log the package as a pyfunc model of the active MLflow run (and register it).

    Parameters
    ----------
    folder : path-like
        A package folder.
    name : str
        The model's name in the run.
    registered_model_name : str, optional
        Register a new version of this registered model.
    input_example : array-like, optional
        Passed to MLflow as the model's input example.

    Returns
    -------
    mlflow.models.model.ModelInfo
    """
    info = json.loads((Path(folder) / "package.json").read_text())
    return mlflow.pyfunc.log_model(
        name=name, python_model=StellarModel(), artifacts={ARTIFACT_KEY: str(folder)},
        signature=signature(info["targets"], int(info.get("n_samples", 100))),
        pip_requirements=requirements(), registered_model_name=registered_model_name,
        input_example=input_example)


def package_folder(model_dir) -> Path:
    """The package folder inside an MLflow model directory, found by reading ``MLmodel`` as data.

    Parameters
    ----------
    model_dir : path-like
        A logged pyfunc model's directory (``MLmodel``, ``artifacts/package/...``).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    PackageError
        No ``MLmodel``, no package artifact, or an artifact path leading out of the directory.
    """
    model_dir = Path(model_dir).resolve()
    spec = model_dir / "MLmodel"
    if not spec.is_file():
        raise PackageError(f"{model_dir}: no MLmodel file; not an MLflow model directory")
    try:
        meta = yaml.safe_load(spec.read_text()) or {}
        rel = meta["flavors"]["python_function"]["artifacts"][ARTIFACT_KEY]["path"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise PackageError(f"{spec}: no '{ARTIFACT_KEY}' artifact in the python_function flavor; "
                           "not a stellarexp package (made by stage=package)") from exc
    folder = (model_dir / str(rel)).resolve()
    if not folder.is_relative_to(model_dir):  # a planted '../' or symlink must not lead outside
        raise PackageError(f"{spec}: the package path {rel!r} leads outside the model directory")
    return folder


def load(model_uri: str) -> Predictor:
    """The :class:`~stellarexp.models.package_predictor.Predictor` of a logged package, as data.

    The model directory (``models:/...``, ``runs:/...``, or a local directory holding a copy)
    is downloaded and read as files: ``MLmodel`` as YAML, the package's JSON and weight files
    (weights-only torch loads). Nothing in it is unpickled or imported: every piece of code
    comes from the installed stellarexp, so a tampered copy cannot run code here.
    ``mlflow.pyfunc.load_model`` also loads the package, but it unpickles ``python_model.pkl``:
    use it only on a store you trust.

    Parameters
    ----------
    model_uri : str
        ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``runs:/<run id>/model`` or
        a local model directory.

    Returns
    -------
    stellarexp.models.package_predictor.Predictor

    Raises
    ------
    PackageError
        The URI names no model, or a model that is not a stellarexp package.
    """
    local = Path(str(model_uri).removeprefix("file://")).expanduser()
    if local.is_dir():
        return Predictor(package_folder(local))
    with tempfile.TemporaryDirectory(prefix="stellarexp-model-") as tmp:
        try:
            model_dir = mlflow.artifacts.download_artifacts(artifact_uri=str(model_uri), dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise PackageError(f"model_uri={model_uri}: cannot load the model ({exc}). Give "
                               "models:/<name>/<version>, models:/<name>@<alias>, "
                               "runs:/<run id>/model of a `stage=package` run, or its directory") from None
        # the Predictor reads every file it needs now; the download goes with the temp folder
        return Predictor(package_folder(model_dir))
