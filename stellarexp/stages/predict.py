"""``stage=predict``: apply a packaged model to new stars and write a prediction catalogue.

``model_uri`` names a model logged by ``stage=package`` (``models:/<name>/<version>``,
``models:/<name>@<alias>`` or ``runs:/<run id>/model``). ``input`` is either a dataset file
(``.h5``, e.g. one built with ``data.labels=null``) or a CasJobs cross-match table, which goes
through the label-free pipeline first (photometric cuts, aligned cutouts, reject rules; frames
under ``frame_root``). Stars need no labels; labels present in a dataset file are copied beside
the predictions.

The catalogue (format from ``output``'s extension: ``.csv``, ``.fits``, ``.parquet``) has one row
per accepted star: ids and position, per target ``<t>_mean``, ``<t>_std``, ``<t>_lo``, ``<t>_hi``
(95% interval, calibrated when the head carries a recalibration; the two-stage logg's from its
mixture predictive), ``logg_class_prob`` (the classifier's P(logg > 4)), ``logg_prob_above``
(P(logg > 4) of the logg predictive) and ``ood``, ``ood_score``, ``ood_reasons`` (out of the
training distribution: a prediction, colour or magnitude outside the training range, or colours
where training stars are sparse; :func:`stellarexp.models.training_ranges.ood`). Rejected stars go to ``<output stem>_rejects<ext>`` with reason and detail. Both files
are logged to the MLflow run, which is named and tagged by what it applied to what: ``predict
<model name> v<version> <input file>``, tags ``model_name``, ``model_version``, ``model_uri``,
``input``, ``input_sha256`` (the input file's content) and ``data_fingerprint`` (the dataset
predicted); the config's default data and split are not tagged (``stage.skip_tags``).
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Table
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from stellarexp import home
from stellarexp.constants import BANDS
from stellarexp.data import dataset as ds
from stellarexp.data import pipeline
from stellarexp.data.features import side_input_frame
from stellarexp.data.pipeline import UserInputError
from stellarexp.io_utils import atomic_path
from stellarexp.models import package_format, packaged, training_ranges
from stellarexp.stages import image_common as ic

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".fits": "fits", ".fit": "fits", ".parquet": "parquet", ".pq": "parquet"}
DATASET_SUFFIXES = (".h5", ".hdf5")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".txt", ".fits", ".fit", ".fits.gz", ".parquet", ".pq")
ID_COLUMNS = ("star_id", "obj_id", "apogee_id", "ra", "dec", "run", "camcol", "field")


def _user_error(message: str):
    return UserInputError(message)


def table_format(path) -> str:
    """``csv``, ``fits`` or ``parquet`` from the file name (a clear error otherwise)."""
    suffix = Path(str(path)).suffix.lower()
    if suffix not in FORMATS:
        raise _user_error(f"output={path}: unknown catalogue type {suffix!r}; end the file name "
                          f"with one of {', '.join(FORMATS)}")
    return FORMATS[suffix]


def write_table(frame, path) -> Path:
    """Write ``frame`` atomically as CSV, FITS or Parquet (by extension)."""
    path = Path(path)
    fmt = table_format(path)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        elif fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            table = Table.from_pandas(frame.reset_index(drop=True))
            for name in table.colnames:  # FITS wants fixed-width strings, not objects
                if table[name].dtype == object:
                    table[name] = table[name].astype(str)
            table.write(tmp, format="fits", overwrite=True)
    return path


def _check_output_is_not_an_input(cfg, output: Path) -> None:
    """Refuse an output (or its rejects file) that would overwrite the input or the model."""
    inputs = {str(cfg.get(k)) for k in ("input", "model_uri") if not _missing(cfg, k)}
    for target in (output, rejects_path(output)):
        for name in inputs:
            source = Path(name).expanduser()
            if source.exists() and target.resolve() == source.resolve():
                raise _user_error(f"output={output} would overwrite the input {source}; "
                                  "give another output file")


def rejects_path(output) -> Path:
    """``<stem>_rejects<ext>`` beside the catalogue."""
    output = Path(output)
    return output.with_name(f"{output.stem}_rejects{output.suffix}")


def _missing(cfg, key: str) -> bool:
    return key not in cfg or OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, "")


def prepare_input(cfg, dataset_path=None) -> Path:
    """The dataset file to predict: ``input`` itself, or built label-free from a cross-match.

    The dataset built from a cross-match table is kept at ``dataset_path`` (default: under
    ``$STELLAREXP_HOME/cache/predict/``) and rebuilt only when the table, frames location or
    cutout settings change.
    """
    if _missing(cfg, "input"):
        raise _user_error("input is not set: give input=<dataset file .h5> or "
                          "input=<cross-match table> [frame_root=<folder of frames/301/...>]")
    path = Path(str(cfg.input)).expanduser()
    if not path.is_file():
        raise _user_error(f"input={path}: file not found")
    name = path.name.lower()
    if name.endswith(DATASET_SUFFIXES):
        try:
            attrs = ds.read_attrs(path)
            with ds.open_dataset(path) as h5:
                shape = tuple(h5["images"].shape)
        except ds.DatasetError as exc:
            raise _user_error(str(exc)) from None
        bands = str(attrs.get("bands", "".join(BANDS)))
        if len(shape) != 4 or shape[1:] != (len(BANDS), 48, 48) or bands != "".join(BANDS):
            raise _user_error(f"input={path}: images of shape {shape} in bands {bands!r}; the "
                              "model needs the five bands u, g, r, i, z as [N, 5, 48, 48] cutouts")
        return path
    if not name.endswith(TABLE_SUFFIXES):
        raise _user_error(f"input={path}: neither a dataset file ({', '.join(DATASET_SUFFIXES)}) "
                          f"nor a cross-match table ({', '.join(TABLE_SUFFIXES)})")
    frame_root = Path(str(cfg.frame_root)).expanduser() if not _missing(cfg, "frame_root") \
        else path.parent
    if not frame_root.is_dir():
        raise _user_error(f"frame_root={frame_root}: no such folder (it must hold frames/301/...)")
    key = hashlib.sha256(f"{path.resolve()}|{frame_root.resolve()}".encode()).hexdigest()[:16]
    cutouts = OmegaConf.to_container(cfg.data.cutouts, resolve=True) if "cutouts" in cfg.data \
        else {}
    data_cfg = OmegaConf.create({
        "name": "predict-input", "crossmatch": str(path), "labels": None,
        "frame_root": str(frame_root), "download": False, "skip_missing_frames": True,
        "dataset_path": str(dataset_path or home.home() / "cache" / "predict"
                            / f"{path.stem}-{key}.h5"),
        "cutouts": cutouts})
    try:
        return pipeline.build(data_cfg, progress=bool(cfg.stage.progress_bar))
    except pipeline.UserInputError:
        raise
    except (ValueError, FileNotFoundError) as exc:  # CatalogError and the like
        raise _user_error(f"input={path}: {exc}") from None


def side_inputs_of(stars: pd.DataFrame, kinds) -> pd.DataFrame | None:
    """The raw side inputs a package reads (``None`` when it reads none). An input without Gaia
    columns predicts every star as one without a parallax (warned), as Gaia users would."""
    if not kinds:
        return None
    if "parallax" in kinds and "parallax" not in stars:
        log.warning("the model reads parallaxes but the input has no Gaia columns: every star is "
                    "predicted without one (add gaia=<Gaia archive CSV> to `python -m "
                    "stellarexp.data crossmatch`; docs/parallax.md)")
        stars = stars.assign(parallax=np.nan, parallax_error=np.nan)
    return side_input_frame(stars, kinds)


def run(cfg, run) -> dict[str, float]:
    """Predict every star of ``input`` with ``model_uri``; see the module docstring."""
    st = cfg.stage
    if _missing(cfg, "model_uri"):
        raise _user_error("model_uri is not set: give model_uri=models:/<name>/<version> (see "
                          "`stage=package`) or runs:/<run id>/model")
    output = Path(str(cfg.output)).expanduser() if not _missing(cfg, "output") \
        else run.output_dir / "catalogue.csv"
    table_format(output)  # fail before any work on a bad extension
    _check_output_is_not_an_input(cfg, output)
    tic = time.perf_counter()
    try:
        predictor = packaged.load(str(cfg.model_uri))
    except package_format.PackageError as exc:
        raise _user_error(str(exc)) from None
    path = prepare_input(cfg)
    ic.set_threads(cfg)
    name, version = model_identity(str(cfg.model_uri))
    source = Path(str(cfg.input)).expanduser()
    run.set_tags({"model_uri": str(cfg.model_uri), "model_name": name, "model_version": version,
                  "input": str(cfg.input), "input_sha256": file_sha256(source),
                  "data_path": str(path),
                  "data_fingerprint": str(ds.read_attrs(path).get("fingerprint", "")),
                  "package_head_run_id": predictor.info.get("runs", {}).get("head", "")})
    if not st.run_name:
        run.set_tags({"mlflow.runName": " ".join(
            p for p in ("predict", name, f"v{version}" if version else "", source.name) if p)})
    cat, rejects = predict_dataset(predictor, path, st)
    seconds = time.perf_counter() - tic
    write_table(cat, output)
    rej_out = write_table(rejects.reset_index(drop=True)[["star_id", "reason", "detail"]],
                          rejects_path(output))
    run.log_artifact(output, "catalogue")
    run.log_artifact(rej_out, "catalogue")
    metrics = {"predict/n_stars": float(len(cat)), "predict/n_rejected": float(len(rejects)),
               "predict/n_ood": float(cat["ood"].sum()),
               "predict/seconds": seconds,
               "predict/stars_per_s": len(cat) / seconds if seconds > 0 else 0.0}
    metrics.update(label_metrics(cat, predictor.targets))
    reasons = rejects["reason"].value_counts().to_dict() if len(rejects) else {}
    log.info("catalogue %s: %d stars (%d out of distribution), %d rejected %s, %.1f s", output,
             len(cat), int(metrics["predict/n_ood"]), len(rejects), reasons, seconds)
    print(f"wrote {output} ({len(cat)} stars) and {rej_out} ({len(rejects)} rejected)",
          flush=True)
    return metrics


def predict_dataset(predictor, path, st) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Catalogue and rejects of every star of a dataset file (nothing written).

    Parameters
    ----------
    predictor : stellarexp.models.package_predictor.Predictor
        The loaded package.
    path : path-like
        A dataset file (:func:`prepare_input`).
    st : omegaconf.DictConfig
        The ``stage`` node: ``batch_size``, ``n_samples``, ``seed``, ``progress_bar``.

    Returns
    -------
    catalogue : pandas.DataFrame
        Ids and position, the predictions and, where the input carries them, the labels.
    rejects : pandas.DataFrame
        The dataset's rejects plus stars whose prediction is not finite.

    Notes
    -----
    Stars are predicted field by field (consecutive rows of one ``run``, ``camcol``,
    ``field``; the whole file when it has no field columns), in batches of ``batch_size``
    that start afresh in each field, each batch's head draws seeded by ``stage.seed``, the
    field and the batch's number within the field (:func:`batch_seed`). A star's prediction
    therefore depends on its field's stars only, not on the other fields of the input: the
    catalogue of a survey predicted in shards (``stage=predict_survey``) equals that of the
    whole table predicted at once.
    """
    stars = ds.read_stars(path)
    rejects = ds.read_rejects(path)
    colours = training_ranges.star_colours(stars)
    side = side_inputs_of(stars, predictor.side_inputs)
    batch = max(int(st.batch_size), 1)
    parts = []
    bar = tqdm(total=len(stars), unit="star", desc="predict",
               disable=not bool(st.progress_bar))
    for key, first, stop in field_blocks(stars):
        for i, start in enumerate(range(first, stop, batch)):
            rows = np.arange(start, min(start + batch, stop))
            images = ds.read_images(path, rows)
            parts.append(predictor.predict(
                images, None if colours is None else colours.iloc[rows].reset_index(drop=True),
                n_samples=st.get("n_samples"), seed=batch_seed(int(st.seed), key, i),
                batch_size=batch,
                side=None if side is None else side.iloc[rows].reset_index(drop=True)))
            bar.update(len(rows))
    bar.close()
    pred = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=predictor.columns)
    ids = stars[[c for c in ID_COLUMNS if c in stars]].reset_index(drop=True)
    cat = pd.concat([ids, pred], axis=1)
    for t in predictor.targets:
        if t in stars and np.isfinite(stars[t].to_numpy(float)).any():
            cat[f"{t}_label"] = stars[t].to_numpy(float)
    means = cat[[f"{t}_mean" for t in predictor.targets]].to_numpy(float)
    bad = ~np.isfinite(means).all(axis=1)
    if bad.any():  # batch work goes on: such stars are listed, not fatal
        rejects = pd.concat([rejects, pd.DataFrame({
            "star_id": cat.loc[bad, "star_id"].astype(str), "reason": "non_finite_prediction",
            "detail": "the model returned a non-finite mean"})], ignore_index=True)
        cat = cat[~bad].reset_index(drop=True)
    return cat, rejects


FIELD_COLUMNS = ("run", "camcol", "field")


def field_blocks(stars: pd.DataFrame) -> list[tuple[str, int, int]]:
    """``(field key, first row, stop row)`` of each run of consecutive rows of one field
    (``run-camcol-field``); one block ``("", 0, n)`` when the table has no field columns."""
    if not len(stars):
        return []
    if not all(c in stars for c in FIELD_COLUMNS):
        return [("", 0, len(stars))]
    keys = stars[list(FIELD_COLUMNS)].astype(str).agg("-".join, axis=1).to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    stops = np.r_[starts[1:], len(keys)]
    return [(str(keys[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def batch_seed(seed: int, key: str, number: int) -> int:
    """Seed of batch ``number`` of field ``key``'s head draws: stable across processes and
    machines (a hash, not Python's salted ``hash``)."""
    return zlib.crc32(f"{seed}|{key}|{number}".encode())


def model_identity(model_uri: str) -> tuple[str, str]:
    """``(name, version)`` of a packaged model's URI, for the prediction run's name and tags.

    ``models:/<name>/<version>`` as given; ``models:/<name>@<alias>`` resolved in the registry
    (``@<alias>`` when it cannot be); ``runs:/<id>/...``: ``run <id[:8]>`` and no version; a
    local folder: its name.
    """
    if model_uri.startswith("models:/"):
        rest = model_uri[len("models:/"):].strip("/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            try:
                return name, str(MlflowClient().get_model_version_by_alias(name, alias).version)
            except MlflowException:
                return name, f"@{alias}"
        name, _, version = rest.partition("/")
        return name, version
    if model_uri.startswith("runs:/"):
        return f"run {model_uri[len('runs:/'):].split('/', 1)[0][:8]}", ""
    return Path(model_uri).expanduser().name, ""


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (streamed by :func:`hashlib.file_digest`)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def label_metrics(cat, targets) -> dict[str, float]:
    """Sigma and 95% coverage against labels carried by the input (labelled stars only)."""
    out = {}
    for t in targets:
        if f"{t}_label" not in cat:
            continue
        y = cat[f"{t}_label"].to_numpy(float)
        ok = np.isfinite(y)
        if not ok.any():
            continue
        m = cat[f"{t}_mean"].to_numpy(float)[ok]
        out[f"predict/sigma_{t}"] = float(np.std(m - y[ok]))
        inside = (y[ok] >= cat[f"{t}_lo"].to_numpy(float)[ok]) & (
            y[ok] <= cat[f"{t}_hi"].to_numpy(float)[ok])
        out[f"predict/coverage95_{t}"] = float(inside.mean())
        out[f"predict/n_labelled_{t}"] = float(ok.sum())
    return out
