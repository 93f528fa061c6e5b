"""``stage=predict_survey``: ``stage=predict`` over many fields, in shards, merged into one catalogue.

The input is the same as ``stage=predict``'s cross-match table (``input``, frames under
``frame_root``) but may cover any number of SDSS fields. Its fields (``run-camcol-field``, sorted)
are cut into ``survey.n_shards`` contiguous shards; a job with ``survey.shard=<k>`` predicts the
fields of shard ``k`` one by one, so a Hydra grid runs the shards on any launcher::

    python -m stellarexp.train -m stage=predict_survey model_uri=models:/<name>/<version> \\
        input=crossmatch.csv frame_root=/data/sdss survey.dir=/data/survey survey.n_shards=4 \\
        'survey.shard=range(0,4)' hydra/launcher=local hydra.launcher.n_jobs=2

Each shard writes only inside ``<survey.dir>/shards/<k>/`` (so concurrent shards never share a
folder): ``catalogue.csv`` and ``catalogue_rejects.csv`` (atomically), then ``done.json`` (its
inputs' fingerprint and per-field outcome; written last, so it marks a complete shard). A field
that fails (unreadable table rows, missing frames, no star surviving the cuts) is skipped: its
stars go to the shard's rejects with reason ``field_failed`` and the error, and the shard
finishes. A rerun skips every shard whose ``done.json`` carries the same fingerprint (input
file's content, frames folder, model, the shard's fields, draws, seed, cutout settings) and
whose files are present.

When the last shard finishes (``survey.merge=true``) it merges the shards into
``<survey.dir>/catalogue.csv`` and ``catalogue_rejects.csv`` (rows sorted by run, camcol, field,
then their order in the input; written atomically); ``survey.shard=null`` runs the merge alone.
MLflow: one parent run per survey (created by the first shard, its id kept in
``<survey.dir>/parent_run.json``), each shard's job a child run (tag ``mlflow.parentRunId``),
the merged catalogue and rejects artifacts of the parent. A star's prediction does not depend on
its shard (:func:`stellarexp.stages.predict.predict_dataset`), so the merged catalogue equals
``stage=predict`` on the whole table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from stellarexp.data import catalog_files
from stellarexp.data.dataset import DatasetError
from stellarexp.data.pipeline import UserInputError
from stellarexp.io_utils import file_lock, write_csv_atomic
from stellarexp.models import package_format, packaged
from stellarexp.sdss.frames import FrameError
from stellarexp.stages import image_common as ic
from stellarexp.stages import predict
from stellarexp.stages import survey_merge as sm

log = logging.getLogger(__name__)

FIELD_ERRORS = (UserInputError, catalog_files.CatalogError, DatasetError, FrameError,
                package_format.PackageError, ValueError, OSError)
"""What a field may raise and still be skipped (recorded) rather than stop its shard."""


def field_key(run: int, camcol: int, field: int) -> str:
    """``run-camcol-field``, the field's name in folders, tables and reasons."""
    return f"{int(run)}-{int(camcol)}-{int(field)}"


def read_fields(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The input table as written (original columns) and each row's field key.

    Raises
    ------
    UserInputError
        The table cannot be read or lacks ``run``, ``camcol``, ``field`` (the message names the
        file).
    """
    try:
        raw = catalog_files.read_table(path)
        canon = catalog_files.read_crossmatch(raw)
    except (catalog_files.CatalogError, OSError, ValueError) as exc:
        raise UserInputError(f"input={path}: {exc}") from None
    keys = np.array([field_key(*row) for row in
                     canon[["run", "camcol", "field"]].itertuples(index=False, name=None)])
    return raw.reset_index(drop=True), keys


def shard_fields(keys, n_shards: int) -> list[list[str]]:
    """The survey's fields (sorted by run, camcol, field) cut into ``n_shards`` contiguous
    shards of near-equal size (a shard may be empty when there are fewer fields than shards)."""
    fields = sorted(set(keys), key=lambda k: tuple(int(p) for p in k.split("-")))
    return [list(part) for part in np.array_split(np.array(fields, dtype=object), n_shards)]


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_payload(cfg) -> dict:
    """What every shard's result depends on, apart from its fields (hashed into fingerprints)."""
    st = cfg.stage
    cutouts = OmegaConf.to_container(cfg.data.cutouts, resolve=True) if "cutouts" in cfg.data \
        else {}
    source = Path(str(cfg.input)).expanduser()
    return {"input_sha256": predict.file_sha256(source), "model_uri": str(cfg.model_uri),
            "frame_root": str(Path(str(cfg.frame_root)).expanduser().resolve())
            if not predict._missing(cfg, "frame_root") else str(source.parent.resolve()),
            "n_samples": st.get("n_samples"), "seed": int(st.seed), "cutouts": cutouts,
            "n_shards": int(cfg.survey.n_shards)}


def run(cfg, run) -> dict[str, float]:
    """Predict shard ``survey.shard`` of the survey (or merge it); see the module docstring."""
    sv = cfg.survey
    if predict._missing(cfg, "model_uri"):
        raise UserInputError("model_uri is not set: give model_uri=models:/<name>/<version>")
    if predict._missing(cfg, "input"):
        raise UserInputError("input is not set: give input=<cross-match table covering the "
                             "survey's fields> [frame_root=<folder of frames/301/...>]")
    if "dir" not in sv or OmegaConf.is_missing(sv, "dir") or not sv.dir:
        raise UserInputError("survey.dir is not set: give the survey's output folder")
    n_shards = int(sv.n_shards)
    if n_shards < 1:
        raise UserInputError(f"survey.n_shards={n_shards}: must be at least 1")
    if sv.shard is not None and not 0 <= int(sv.shard) < n_shards:
        raise UserInputError(f"survey.shard={sv.shard}: must be in 0..{n_shards - 1} "
                             f"(survey.n_shards={n_shards})")
    source = Path(str(cfg.input)).expanduser()
    if not source.is_file():
        raise UserInputError(f"input={source}: file not found")
    out = Path(str(sv.dir)).expanduser()
    payload = plan_payload(cfg)
    raw, keys = read_fields(source)
    shards = shard_fields(keys, n_shards)
    parent = sm.open_parent(run.client, run, out, _digest(payload), cfg)
    run.set_tags({"mlflow.parentRunId": parent, "survey_dir": str(out),
                  "model_uri": str(cfg.model_uri), "input": str(source)})
    expected = [(sm.shard_dir(out, j), _digest({**payload, "fields": f}))
                for j, f in enumerate(shards)]
    if sv.shard is None:
        run.set_tags({"mlflow.runName": f"survey merge {out.name}", "survey_shard": "merge"})
        with file_lock(out / ".lock"):
            return sm.merge(run.client, parent, out, expected)
    k = int(sv.shard)
    run.set_tags({"mlflow.runName": f"survey shard {k}/{n_shards} {out.name}",
                  "survey_shard": str(k)})
    folder = sm.shard_dir(out, k)
    fingerprint = expected[k][1]
    done = sm.finished(folder, fingerprint)
    if done is not None:
        log.info("shard %d already done (%s): skipped", k, folder)
        print(f"shard {k}: already done in {folder}, skipped", flush=True)
        metrics = {"survey/shard_skipped": 1.0, "survey/n_stars": float(done["n_stars"]),
                   "survey/n_rejected": float(done["n_rejected"])}
    else:
        metrics = predict_shard(cfg, run, raw, keys, shards[k], folder, fingerprint)
    if bool(sv.merge):
        with file_lock(out / ".lock"):
            if sm.merged(out, expected):
                log.info("survey catalogue %s already merged from these shards", out)
                run.client.set_terminated(parent, "FINISHED")  # reopened by this rerun
            elif all(sm.finished(f, fp) is not None for f, fp in expected):
                sm.merge(run.client, parent, out, expected)  # the survey's metrics: on the parent
                metrics["survey/merged_here"] = 1.0
    return metrics


def predict_shard(cfg, run, raw: pd.DataFrame, keys, fields, folder: Path,
                  fingerprint: str) -> dict[str, float]:
    """Predict the ``fields`` of one shard into ``folder``; return the shard's metrics.

    Each field's rows are written to ``folder/fields/<field>.csv`` and predicted like
    ``stage=predict`` input; the field's cutout dataset is removed afterwards unless
    ``survey.keep_cutouts``. A field raising one of :data:`FIELD_ERRORS` is recorded and
    skipped.
    """
    tic = time.perf_counter()
    try:
        predictor = packaged.load(str(cfg.model_uri))
    except package_format.PackageError as exc:
        raise UserInputError(str(exc)) from None
    ic.set_threads(cfg)
    work = folder / "fields"
    shutil.rmtree(work, ignore_errors=True)  # leftovers of a killed attempt
    # each field's table is written under work/: frames default to the survey input's folder
    frames = ({"frame_root": str(Path(str(cfg.input)).expanduser().parent)}
              if predict._missing(cfg, "frame_root") else {})
    cats, rejects, outcome = [], [], []
    for key in fields:
        t0 = time.perf_counter()
        rows = raw[keys == key]
        table = work / f"{key}.csv"
        try:
            write_csv_atomic(rows, table, index=False)  # makes the folder
            field_cfg = OmegaConf.merge(cfg, {"input": str(table), **frames})
            path = predict.prepare_input(field_cfg, dataset_path=work / f"{key}.h5")
            cat, rej = predict.predict_dataset(predictor, path, cfg.stage)
            status, error = "done", ""
        except FIELD_ERRORS as exc:
            ids = catalog_files.read_crossmatch(rows)["obj_id"].astype(str) if len(rows) else []
            cat = None
            rej = pd.DataFrame({"star_id": ids, "reason": "field_failed",
                                "detail": f"field {key}: {exc}"})
            status, error = "failed", str(exc)[:500]
            log.warning("field %s skipped: %s", key, exc)
        if cat is not None:
            cats.append(cat)
        rejects.append(rej.reset_index(drop=True)[["star_id", "reason", "detail"]])
        outcome.append({"field": key, "status": status, "n_stars": 0 if cat is None else len(cat),
                        "n_rejected": len(rej), "seconds": round(time.perf_counter() - t0, 3),
                        "error": error})
    if not bool(cfg.survey.get("keep_cutouts", False)):
        shutil.rmtree(work, ignore_errors=True)
    cat = pd.concat(cats, ignore_index=True) if cats else pd.DataFrame(columns=predictor.columns)
    rej = pd.concat(rejects, ignore_index=True) if rejects else \
        pd.DataFrame(columns=["star_id", "reason", "detail"])
    seconds = time.perf_counter() - tic
    sm.write_shard(folder, cat, rej, {"fingerprint": fingerprint, "fields": outcome,
                                      "n_stars": len(cat), "n_rejected": len(rej),
                                      "seconds": round(seconds, 3), "run_id": run.run_id})
    run.log_artifact(folder / "done.json", "shard")
    failed = sum(o["status"] == "failed" for o in outcome)
    print(f"shard {folder.name}: {len(fields)} fields ({failed} failed), {len(cat)} stars, "
          f"{len(rej)} rejected, {seconds:.1f} s", flush=True)
    return {"survey/shard_skipped": 0.0, "survey/n_fields": float(len(fields)),
            "survey/n_fields_failed": float(failed), "survey/n_stars": float(len(cat)),
            "survey/n_rejected": float(len(rej)), "survey/seconds": seconds,
            "survey/stars_per_s": len(cat) / seconds if seconds > 0 else 0.0}

