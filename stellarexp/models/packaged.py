"""The trained image model as ONE MLflow pyfunc model: assembly, prediction, logging.

A *package* is a folder holding copies of the parts' artifacts, as the stages logged them:

``backbone/``
    ``weights.pt``, ``model.json``, ``scalers.json`` of the averaged ConViT (band scales inside).
``head/``
    the Bayes-by-Backprop head (``weights.pt``, ``model.json`` with its label scaler) and, when
    the head run has one, ``recalibration.json`` (:mod:`stellarexp.evaluate.calibration`).
``classifier/``, ``head_dwarf/``, ``head_giant/`` (optional)
    the logg classifier and the two logg heads (paper Eq. 20); ``logg_recalibration.json``
    (the ``logg_heads`` run's ``heads/recalibration.json``) calibrates their combined logg.
``package.json``
    run ids, targets, the logg choice, the number of head draws, and the training ranges of the
    labels and of the 10 extinction-corrected colours (for the out-of-range flag).

:class:`Predictor` runs a package on raw cutouts ``[N, 5, 48, 48]`` (nanomaggies): one backbone
pass, ``n_samples`` vectorised head draws, calibrated intervals when the head has a
recalibration. :class:`StellarModel` wraps it as an ``mlflow.pyfunc.PythonModel`` and
:func:`log_package` logs (and registers) it. :func:`load` reads a logged package as data only
(no unpickling, no code from the model directory); ``mlflow.pyfunc.load_model`` works too, for
stores you trust (it unpickles ``python_model.pkl``). Both need ``stellarexp`` importable.

Imports mlflow (the PythonModel base) at import time and torch when a package is loaded: import
this module only where a package is built or used.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd

from stellarexp.constants import LOGG_THRESHOLD
from stellarexp.io_utils import atomic_path

log = logging.getLogger(__name__)

PACKAGE_FORMAT = 1
ARTIFACT_KEY = "package"
PART_DIRS = ("backbone", "head", "classifier", "head_dwarf", "head_giant")
LEVEL = 0.95
IMAGE_SHAPE = (5, 48, 48)


class PackageError(ValueError):
    """A package folder (or the input given to it) that cannot be used; the message says why."""


# --------------------------------------------------------------------------- training ranges


def training_ranges(stars: pd.DataFrame, targets: Sequence[str]) -> dict:
    """Min/max of each label and of the 10 dereddened colours over ``stars`` (finite values).

    Parameters
    ----------
    stars : pandas.DataFrame
        The training stars (dataset star-table columns).
    targets : sequence of str

    Returns
    -------
    dict
        ``{"labels": {t: [lo, hi]}, "colours": {"u-g": [lo, hi], ...}}``.
    """
    from stellarexp.data.features import colors

    out: dict = {"labels": {}, "colours": {}}
    for t in targets:
        v = pd.to_numeric(stars[t], errors="coerce").to_numpy(float) if t in stars else np.array([])
        v = v[np.isfinite(v)]
        if v.size:
            out["labels"][t] = [float(v.min()), float(v.max())]
    if all(f"psfmag_{b}" in stars for b in "ugriz"):
        col = colors(stars)
        for name in col.columns:
            v = col[name].to_numpy(float)
            v = v[np.isfinite(v)]
            if v.size:
                out["colours"][name] = [float(v.min()), float(v.max())]
    return out


def star_colours(stars: pd.DataFrame) -> pd.DataFrame | None:
    """The 10 dereddened colours of ``stars``, or ``None`` without ``psfmag_<b>`` columns."""
    from stellarexp.data.features import colors

    if not all(f"psfmag_{b}" in stars for b in "ugriz"):
        return None
    return colors(stars).reset_index(drop=True)


def out_of_range(mean: Mapping[str, np.ndarray], ranges: dict,
                 colours: pd.DataFrame | None = None) -> tuple[np.ndarray, list[str]]:
    """Flag stars whose predicted mean or input colour lies outside the training range.

    Returns
    -------
    flag : numpy.ndarray of bool ``[N]``
    detail : list of str
        Per star, the offending quantities (``"teff>max; u-g<min"``), empty when in range.
    """
    n = len(next(iter(mean.values())))
    reasons: list[list[str]] = [[] for _ in range(n)]

    def check(name, values, bounds):
        lo, hi = bounds
        values = np.asarray(values, float)
        for i in np.flatnonzero(values < lo):
            reasons[i].append(f"{name}<min")
        for i in np.flatnonzero(values > hi):
            reasons[i].append(f"{name}>max")

    for t, bounds in (ranges.get("labels") or {}).items():
        if t in mean:
            check(t, mean[t], bounds)
    if colours is not None:
        if len(colours) != n:
            raise PackageError(f"{len(colours)} colour rows for {n} images")
        for c, bounds in (ranges.get("colours") or {}).items():
            if c in colours:
                check(c, colours[c].to_numpy(float), bounds)
    detail = ["; ".join(r) for r in reasons]
    return np.array([bool(r) for r in reasons]), detail


# --------------------------------------------------------------------------- assembly


def assemble(folder, parts: Mapping[str, str | Path], info: dict) -> Path:
    """Write a package folder from downloaded part folders.

    Parameters
    ----------
    folder : path-like
        Destination (created; must not hold another package).
    parts : mapping
        Part name (:data:`PART_DIRS`) -> downloaded artifact folder. ``backbone`` and ``head``
        are required; ``classifier``, ``head_dwarf`` and ``head_giant`` come together or not.
    info : dict
        Written into ``package.json`` (run ids, targets, ranges, logg choice, n_samples).
    """
    folder = Path(folder)
    missing = [p for p in ("backbone", "head") if p not in parts]
    if missing:
        raise PackageError(f"a package needs the parts {missing}")
    unknown = sorted(set(parts) - set(PART_DIRS))
    if unknown:
        raise PackageError(f"unknown package parts {unknown}; known: {PART_DIRS}")
    if (folder / "package.json").exists():
        raise PackageError(f"{folder} already holds a package")
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in parts.items():
        shutil.copytree(Path(src), folder / name)
    meta = {"format": PACKAGE_FORMAT, "parts": sorted(parts), **info}
    with atomic_path(folder / "package.json") as tmp:  # last: marks the package complete
        tmp.write_text(json.dumps(meta, indent=2, default=float))
    return folder


# --------------------------------------------------------------------------- prediction


def _load_head(folder: Path):
    import torch

    from stellarexp.data.scalers import LabelScaler
    from stellarexp.models.image_module import HeadModule

    meta = json.loads((folder / "model.json").read_text())
    module = HeadModule(**meta["hparams"])
    module.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu",
                                      weights_only=True))
    module.eval()
    scaler = LabelScaler.from_dict(meta["label_scaler"]) if meta.get("label_scaler") else None
    return module, scaler, meta


class Predictor:
    """A loaded package: predicts Teff, logg, [Fe/H] with uncertainties from raw cutouts.

    Parameters
    ----------
    folder : path-like
        A package folder (:func:`assemble`).
    """

    def __init__(self, folder):
        from stellarexp.models.backbone_artifact import read_backbone_artifact

        self.folder = Path(folder)
        path = self.folder / "package.json"
        if not path.is_file():
            raise PackageError(f"{self.folder} is not a stellarexp package (no package.json)")
        self.info = json.loads(path.read_text())
        if int(self.info.get("format", 0)) > PACKAGE_FORMAT:
            raise PackageError(f"package format {self.info['format']} is newer than this "
                               f"stellarexp ({PACKAGE_FORMAT}); upgrade stellarexp")
        self.backbone = read_backbone_artifact(self.folder / "backbone",
                                               self.info.get("runs", {}).get("backbone", ""))
        self.head, self.scaler, head_meta = _load_head(self.folder / "head")
        self.targets = tuple(head_meta["targets"])
        self.recalibration = self._recalibration(self.folder / "head" / "recalibration.json")
        self.logg_recalibration = self._recalibration(self.folder / "logg_recalibration.json")
        self.classifier = self.dwarf = self.giant = None
        self.threshold = float(self.info.get("threshold", LOGG_THRESHOLD))
        if (self.folder / "classifier").is_dir():
            self.classifier, _, clf_meta = _load_head(self.folder / "classifier")
            self.threshold = float(clf_meta.get("threshold", self.threshold))
        if (self.folder / "head_dwarf").is_dir() and (self.folder / "head_giant").is_dir():
            self.dwarf = _load_head(self.folder / "head_dwarf")
            self.giant = _load_head(self.folder / "head_giant")
        self.logg_mode = str(self.info.get("logg", "head"))
        if self.logg_mode == "two_stage" and (self.classifier is None or self.dwarf is None):
            raise PackageError("package.json asks for the two-stage logg but the classifier or "
                               "the logg heads are missing")
        self.combine = str(self.info.get("combine", "hard"))
        self.n_samples = int(self.info.get("n_samples", 100))
        self.ranges = self.info.get("ranges") or {}

    @staticmethod
    def _recalibration(path: Path):
        if not path.is_file():
            return None
        try:
            from stellarexp.evaluate.calibration import Recalibration
        except ImportError:
            log.warning("%s present but stellarexp.evaluate.calibration is missing: "
                        "intervals are uncalibrated", path)
            return None
        return Recalibration.from_dict(json.loads(path.read_text()))

    @property
    def columns(self) -> list[str]:
        """Output columns of :meth:`predict`."""
        cols = [f"{t}_{s}" for t in self.targets for s in ("mean", "std", "lo", "hi")]
        return [*cols, "logg_class_prob", "out_of_range", "out_of_range_detail"]

    @staticmethod
    def check_images(images) -> np.ndarray:
        """``images`` as float32 ``[N, 5, 48, 48]`` (non-finite pixels set to 0, the sky)."""
        arr = np.asarray(images, dtype=np.float32)
        if arr.ndim == 3 and arr.shape == IMAGE_SHAPE:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != IMAGE_SHAPE:
            raise PackageError(
                f"images must be [N, 5, 48, 48] (bands u, g, r, i, z, nanomaggies), got shape "
                f"{tuple(arr.shape)}" + ("; a band is missing" if arr.ndim == 4 and
                                         arr.shape[1] < 5 else ""))
        return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)

    def _draws(self, module, scaler, feats, n):
        """Head draws in physical units ``[S, B, T]`` (float64)."""
        z = module.head(feats.expand(n, *feats.shape)).double()
        return scaler.inverse(z) if scaler is not None else z

    def predict(self, images, colours: pd.DataFrame | None = None, *, n_samples: int | None = None,
                seed: int = 0, batch_size: int = 256) -> pd.DataFrame:
        """Predictions for raw cutouts.

        Parameters
        ----------
        images : array-like ``[N, 5, 48, 48]``
            Aligned five-band cutouts in nanomaggies (the dataset file's ``images``).
        colours : pandas.DataFrame, optional
            The 10 dereddened colours of the same stars (:func:`star_colours`); with them the
            out-of-range flag also checks the inputs.
        n_samples : int, optional
            Head draws per star (default: the package's).
        seed : int
            Seed of the head draws (same seed, same numbers).
        batch_size : int
            Images per backbone pass.

        Returns
        -------
        pandas.DataFrame
            :attr:`columns`: per target mean, std, ``lo``/``hi`` of the 95% interval (calibrated
            when the head carries a recalibration), ``logg_class_prob`` (P(logg > threshold);
            NaN without a classifier), ``out_of_range`` and its ``out_of_range_detail``.
        """
        import torch

        from stellarexp.models.bayes import summarize
        from stellarexp.models.two_stage import combine

        arr = self.check_images(images)
        n = int(n_samples or self.n_samples)
        if n < 2:
            raise PackageError(f"n_samples must be >= 2 for a spread, got {n}")
        parts: dict[str, list] = {k: [] for k in ("mean", "std", "lo", "hi", "p")}
        model = self.backbone.model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for start in range(0, len(arr), int(batch_size)):
                x = self.backbone.band_scaler.transform(torch.from_numpy(arr[start:start + batch_size]))
                feats = model.features(x)
                pred = summarize(self._draws(self.head, self.scaler, feats, n), level=LEVEL)
                out = {k: getattr(pred, k).numpy().copy() for k in ("mean", "std", "lo", "hi")}
                p = np.full(len(feats), np.nan)
                if self.classifier is not None:
                    logits = self.classifier.head(feats.expand(n, *feats.shape))
                    p_t = torch.sigmoid(logits).mean(0)[:, 0].double()
                    p = p_t.numpy()
                    if self.logg_mode == "two_stage" and "logg" in self.targets:
                        j = self.targets.index("logg")
                        h1 = self._draws(self.dwarf[0], self.dwarf[1], feats, n)[..., 0]
                        h2 = self._draws(self.giant[0], self.giant[1], feats, n)[..., 0]
                        c = combine(p_t, h1, h2, self.combine)
                        for k in ("mean", "std", "lo", "hi"):
                            out[k][:, j] = c[k].numpy()
                for k, v in out.items():
                    parts[k].append(v)
                parts["p"].append(p)
        res = {k: np.concatenate(v) if v else np.zeros((0, len(self.targets)))
               for k, v in parts.items()}
        self._calibrate(res)
        frame = pd.DataFrame({f"{t}_{s}": res[s][:, j] for j, t in enumerate(self.targets)
                              for s in ("mean", "std", "lo", "hi")})
        frame["logg_class_prob"] = res["p"] if len(arr) else np.zeros(0)
        means = {t: res["mean"][:, j] for j, t in enumerate(self.targets)}
        flag, detail = out_of_range(means, self.ranges, colours) if len(arr) else (
            np.zeros(0, bool), [])
        frame["out_of_range"] = flag
        frame["out_of_range_detail"] = detail
        return frame[self.columns]

    def _calibrate(self, res: dict) -> None:
        """Replace std and interval by their recalibrated values (the head's targets, and the
        two-stage logg with its own recalibration)."""
        two = self.logg_mode == "two_stage"
        self._apply(res, self.recalibration, lambda t: not (t == "logg" and two))
        if two:
            self._apply(res, self.logg_recalibration, lambda t: t == "logg")

    def _apply(self, res: dict, rec, select) -> None:
        if rec is None or not len(res["mean"]):
            return
        cols = [j for j, t in enumerate(self.targets) if t in rec.targets and select(t)]
        if not cols:
            return
        order = [rec.targets.index(self.targets[j]) for j in cols]
        mean = np.zeros((len(res["mean"]), len(rec.targets)))
        std = np.ones_like(mean)
        mean[:, order] = res["mean"][:, cols]
        std[:, order] = res["std"][:, cols]
        cal_std = rec.std(std)
        lo, hi = rec.interval(mean, std, level=LEVEL)
        res["std"][:, cols] = cal_std[:, order]
        res["lo"][:, cols] = lo[:, order]
        res["hi"][:, cols] = hi[:, order]


# --------------------------------------------------------------------------- MLflow pyfunc


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
    """The pyfunc signature: a float32 tensor of cutouts in, one row per star out."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    cols = [ColSpec("double", f"{t}_{s}") for t in targets for s in ("mean", "std", "lo", "hi")]
    cols += [ColSpec("double", "logg_class_prob"), ColSpec("boolean", "out_of_range"),
             ColSpec("string", "out_of_range_detail")]
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *IMAGE_SHAPE))]),
        outputs=Schema(cols),
        params=ParamSchema([ParamSpec("n_samples", "long", int(n_samples)),
                            ParamSpec("seed", "long", 0)]))


def requirements() -> list[str]:
    """pip requirements written beside the model (explicit: inferring them loads the model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("stellarexp", "torch", "timm", "lightning", "mlflow", "numpy", "pandas",
                 "scipy"):
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
    import yaml

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
    """The :class:`Predictor` of a logged package, read as data only.

    The model directory (``models:/...``, ``runs:/...``, or a local directory holding a copy)
    is downloaded and read as files: ``MLmodel`` as YAML, the package's JSON and weight files
    (weights-only torch loads). Nothing in it is unpickled or imported: every piece of code
    comes from the installed stellarexp, so a tampered copy cannot run code here.
    ``mlflow.pyfunc.load_model`` also loads the package, but it unpickles ``python_model.pkl``:
    use it only on a store you trust.

    Raises
    ------
    PackageError
        The URI names no model, or a model that is not a stellarexp package.
    """
    import tempfile

    from mlflow.exceptions import MlflowException

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
