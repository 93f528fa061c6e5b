"""``stage=package``: assemble the trained image-model parts into one registered pyfunc model.

Parts, found in MLflow (or named by ``stage.runs.*``):

- the head: the latest FINISHED ``stage=head`` run for the data fingerprint and split whose
  targets cover ``target`` (``all``: Teff, logg, [Fe/H]);
- its backbone (the head run's ``backbone_run_id``);
- optionally the latest ``logg_classifier`` on that backbone and the latest ``logg_heads`` run
  that used that classifier (without them ``logg_class_prob`` is NaN and logg is the head's).

The package also stores the training ranges of the labels and colours (from the training subset
of the head's dataset) for the out-of-range flag. It is logged as an MLflow pyfunc model under
``model`` and registered as ``stage.model_name``; the run's tags give both URIs. See
``docs/prediction.md``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from stellarexp.data import dataset as ds
from stellarexp.data.features import side_input_frame
from stellarexp.data.fingerprint import data_fingerprint
from stellarexp.data.pipeline import dataset_path
from stellarexp.models import package_format, packaged, training_ranges
from stellarexp.stages import targets_of
from stellarexp.stages.logg import _latest
from stellarexp.tracking.compare import search_finished

log = logging.getLogger(__name__)


def _get_run(client, run_id: str, stage: str):
    try:
        run = client.get_run(str(run_id))
    except MlflowException as exc:
        raise LookupError(f"stage.runs.{stage}={run_id}: no such run ({exc})") from None
    if run.data.tags.get("stage") != stage:
        raise LookupError(f"run {run_id} is a {run.data.tags.get('stage')!r} run, not {stage}")
    if run.info.status != "FINISHED":
        raise LookupError(f"run {run_id} ({stage}) is {run.info.status}, not FINISHED")
    return run


def find_parts(client, runs_cfg, *, fingerprint: str | None, split: str, targets) -> dict:
    """The runs to package: ``{"head", "backbone", "classifier", "logg_heads"}`` (the last two
    may be ``None``).

    Raises
    ------
    LookupError
        No head run, or run ids that do not belong together; the message says what to run.
    """
    wanted = set(targets)
    if runs_cfg.get("head"):
        head = _get_run(client, runs_cfg["head"], "head")
    else:
        head = next((r for r in search_finished(client, stage="head", fingerprint=fingerprint,
                                                 split=split)
                     if wanted <= set(r.data.tags.get("targets", "").split(","))), None)
        if head is None:
            raise LookupError(
                f"no FINISHED head run covering {sorted(wanted)} for data fingerprint "
                f"{str(fingerprint)[:12]}..., split={split}; train one with `python -m "
                "stellarexp.train stage=head model=convit target=all` or pass "
                "stage.runs.head=<run id>")
    have = set(head.data.tags.get("targets", "").split(","))
    if not wanted <= have:
        raise LookupError(f"head run {head.info.run_id} predicts {sorted(have)}, not all of "
                          f"{sorted(wanted)}")
    bb_id = head.data.tags.get("backbone_run_id", "")
    if runs_cfg.get("backbone") and str(runs_cfg["backbone"]) != bb_id:
        raise LookupError(f"head run {head.info.run_id} was trained on backbone {bb_id}, not "
                          f"stage.runs.backbone={runs_cfg['backbone']}")
    backbone = _get_run(client, bb_id, "backbone")
    fp = head.data.tags.get("data_fingerprint") or fingerprint
    split = head.data.tags.get("split", split)
    if runs_cfg.get("classifier"):
        clf = _get_run(client, runs_cfg["classifier"], "logg_classifier")
        if clf.data.tags.get("backbone_run_id") != bb_id:
            raise LookupError(f"classifier run {clf.info.run_id} is on another backbone than "
                              f"the head ({bb_id})")
    else:
        clf = _latest(client, "logg_classifier", bb_id, split, fp,
                      side_inputs=head.data.tags.get("side_inputs", ""))
    heads = None
    if runs_cfg.get("logg_heads"):
        heads = _get_run(client, runs_cfg["logg_heads"], "logg_heads")
        if clf is None or heads.data.tags.get("classifier_run_id") != clf.info.run_id:
            raise LookupError(f"logg_heads run {heads.info.run_id} used classifier "
                              f"{heads.data.tags.get('classifier_run_id')}, not "
                              f"{clf.info.run_id if clf else 'none'}")
    elif clf is not None:
        heads = next((r for r in search_finished(client, stage="logg_heads", fingerprint=fp,
                                                  split=split)
                      if r.data.tags.get("classifier_run_id") == clf.info.run_id), None)
    return {"head": head, "backbone": backbone, "classifier": clf, "logg_heads": heads}


def choose_logg(mode: str, head, logg_heads) -> str:
    """``head`` or ``two_stage``: ``auto`` takes the lower ``val/sigma_logg`` of the two runs."""
    if mode not in ("auto", "head", "two_stage"):
        raise ValueError(f"stage.logg must be auto, head or two_stage, got {mode!r}")
    if mode == "two_stage" and logg_heads is None:
        raise LookupError("stage.logg=two_stage needs a logg_classifier and a logg_heads run on "
                          "the head's backbone")
    if mode != "auto":
        return mode
    if logg_heads is None:
        return "head"
    one = head.data.metrics.get("val/sigma_logg", float("inf"))
    two = logg_heads.data.metrics.get("val/sigma_logg", float("inf"))
    return "two_stage" if two < one else "head"


def _training_stars(head_run, cfg, split: str):
    """The training-subset star table of the head's dataset (for the training ranges)."""
    fp = head_run.data.tags.get("data_fingerprint")
    candidates = [head_run.data.tags.get("data_path"), str(dataset_path(cfg.data))]
    for cand in candidates:
        if cand and Path(cand).is_file() and (
                not fp or ds.read_attrs(cand).get("fingerprint") == fp):
            stars = ds.read_stars(cand)
            return stars[ds.split_mask(stars["fold"], split, "train")].reset_index(drop=True), cand
    raise FileNotFoundError(
        f"the head run's dataset (fingerprint {str(fp)[:12]}...) is not at {candidates}: the "
        "package needs its training stars for the out-of-range ranges; pass data=... pointing "
        "at that dataset")


def run(cfg, run) -> dict[str, float]:
    """Assemble, log and register the package; see the module docstring."""

    st = cfg.stage
    client = run.client
    split = str(cfg.split.name)
    targets = targets_of(cfg.target)
    parts = find_parts(client, st.get("runs") or {}, fingerprint=data_fingerprint(cfg.data),
                       split=split, targets=targets)
    head = parts["head"]
    split = head.data.tags.get("split", split)
    logg_mode = choose_logg(str(st.logg), head, parts["logg_heads"])
    stars, data_path = _training_stars(head, cfg, split)
    head_targets = head.data.tags["targets"].split(",")
    info = {"targets": head_targets, "split": split, "logg": logg_mode,
            "n_samples": int(st.n_samples),
            "data_fingerprint": head.data.tags.get("data_fingerprint", ""),
            "runs": {k: (r.info.run_id if r is not None else None) for k, r in parts.items()},
            "ranges": training_ranges.training_ranges(stars, head_targets)}
    if parts["logg_heads"] is not None:
        info["combine"] = parts["logg_heads"].data.params.get("stage.combine", "hard")
    folder = run.output_dir / "package"
    with tempfile.TemporaryDirectory(prefix="stellarexp-package-") as tmp:
        downloaded = {
            "backbone": client.download_artifacts(parts["backbone"].info.run_id, "backbone", tmp),
            "head": client.download_artifacts(head.info.run_id, "head", tmp)}
        if parts["classifier"] is not None:
            downloaded["classifier"] = client.download_artifacts(
                parts["classifier"].info.run_id, "classifier", tmp)
        if parts["logg_heads"] is not None:
            for name in ("head_dwarf", "head_giant"):
                sub = Path(tmp) / "logg_heads"
                sub.mkdir(exist_ok=True)
                downloaded[name] = client.download_artifacts(parts["logg_heads"].info.run_id,
                                                             name, str(sub))
        package_format.assemble(folder, downloaded, info)
        if parts["logg_heads"] is not None and logg_mode == "two_stage":
            _copy_artifact(client, parts["logg_heads"].info.run_id, "heads/recalibration.json",
                           folder / "logg_recalibration.json")
    if not (folder / "head" / "recalibration.json").is_file():
        log.warning("head run %s has no head/recalibration.json: the package's intervals are "
                    "the raw (uncalibrated) head spread", head.info.run_id)
    name = st.get("model_name") or None
    model_info = packaged.log_package(folder, registered_model_name=name)
    tags = {"model_uri": model_info.model_uri, "logg_mode": logg_mode,
            "data_fingerprint": info["data_fingerprint"], "data_path": data_path,
            "targets": ",".join(head_targets),
            "calibrated": str((folder / "head" / "recalibration.json").is_file()).lower(),
            **{f"{k}_run_id": v for k, v in info["runs"].items() if v}}
    version = getattr(model_info, "registered_model_version", None)
    if name and version is not None:
        tags.update({"registered_model": name, "registered_version": str(version),
                     "registered_uri": f"models:/{name}/{version}"})
        log.info("registered models:/%s/%s", name, version)
    run.set_tags(tags)
    metrics = {"package/n_parts": float(len(info["runs"]) - list(info["runs"].values()).count(None))}
    if bool(st.check):
        metrics.update(_check(model_info.model_uri, data_path, split))
    return metrics


def _copy_artifact(client, run_id: str, artifact: str, dest: Path) -> bool:
    """Copy one artifact file of a run to ``dest`` when it exists (``False`` otherwise)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(client.download_artifacts(run_id, artifact, tmp))
        except (MlflowException, OSError):
            return False
        if not local.is_file():
            return False
        shutil.copyfile(local, dest)
    return True


def _check(model_uri: str, data_path: str, split: str) -> dict[str, float]:
    """Reload the logged model through ``mlflow.pyfunc`` and predict a few validation stars."""
    stars = ds.read_stars(data_path)
    rows = np.flatnonzero(ds.split_mask(stars["fold"], split, "val"))[:8]
    images = ds.read_images(data_path, rows).astype(np.float32)
    predictor = packaged.load(model_uri)
    if predictor.side_inputs:  # the pyfunc signature takes images only: read it as data
        side = side_input_frame(stars.iloc[rows].reset_index(drop=True), predictor.side_inputs)
        out = predictor.predict(images, n_samples=20, side=side)
    else:
        out = mlflow.pyfunc.load_model(model_uri).predict(images, params={"n_samples": 20})
    means = out[[c for c in out.columns if c.endswith("_mean")]].to_numpy(float)
    if not np.isfinite(means).all():
        raise RuntimeError(f"the reloaded model {model_uri} predicts non-finite values")
    return {"package/check_stars": float(len(rows))}
