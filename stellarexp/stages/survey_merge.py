"""The files and the MLflow parent run of ``stage=predict_survey``: shard folders, done markers,
the survey's parent run and the merge of the shards into the survey catalogue.

Layout of ``survey.dir``::

    parent_run.json               the parent run's id and the survey plan's fingerprint
    shards/<k>/catalogue.csv      shard k's catalogue (k with 4 digits: 0000, 0001, ...)
    shards/<k>/catalogue_rejects.csv
    shards/<k>/done.json          written last: fingerprint, per-field outcome, counts
    catalogue.csv                 the merged survey catalogue
    catalogue_rejects.csv
    merged.json                   the shards' fingerprints the catalogue was merged from
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd

from stellarexp.data.pipeline import UserInputError
from stellarexp.io_utils import file_lock, write_csv_atomic, write_text_atomic
from stellarexp.stages.predict import rejects_path, write_table

log = logging.getLogger(__name__)

PARENT_FILE = "parent_run.json"
DONE_FILE = "done.json"
MERGED_FILE = "merged.json"
CATALOGUE = "catalogue.csv"
FIELD_KEYS = ["run", "camcol", "field"]


def shard_dir(survey_dir: Path, k: int) -> Path:
    """``<survey_dir>/shards/<k>``, the only folder shard ``k`` writes into."""
    return Path(survey_dir) / "shards" / f"{int(k):04d}"


def finished(folder: Path, fingerprint: str) -> dict | None:
    """Shard ``folder``'s ``done.json`` when it is complete for ``fingerprint``, else None.

    Complete: the marker carries ``fingerprint`` and both the catalogue and its rejects exist.
    """
    marker = Path(folder) / DONE_FILE
    try:
        done = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    files = (Path(folder) / CATALOGUE, rejects_path(Path(folder) / CATALOGUE))
    if done.get("fingerprint") != fingerprint or not all(f.is_file() for f in files):
        return None
    return done


def write_shard(folder: Path, cat: pd.DataFrame, rejects: pd.DataFrame, done: dict) -> None:
    """Write a shard's catalogue and rejects (atomically), then its ``done.json`` marker."""
    folder = Path(folder)
    (folder / DONE_FILE).unlink(missing_ok=True)  # a stale marker must never vouch for new files
    write_table(cat, folder / CATALOGUE)
    write_table(rejects, rejects_path(folder / CATALOGUE))
    write_text_atomic(folder / DONE_FILE, json.dumps(done, indent=2))


def open_parent(client, run, survey_dir: Path, plan: str, cfg) -> str:
    """The survey's MLflow parent run: the one recorded in ``parent_run.json`` for the same
    ``plan`` fingerprint (set RUNNING again), else a new run in the job's experiment.

    Raises
    ------
    UserInputError
        ``survey_dir`` holds a survey of other inputs (another table, model, frames, draws or
        number of shards): mixing their shards would give a wrong catalogue.
    """
    survey_dir = Path(survey_dir)
    path = survey_dir / PARENT_FILE
    with file_lock(survey_dir / ".lock"):
        if path.is_file():
            known = json.loads(path.read_text())
            if known.get("plan") != plan:
                raise UserInputError(
                    f"survey.dir={survey_dir} holds a survey of other inputs (plan "
                    f"{known.get('plan')}, this one {plan}: another input table, model, frames, "
                    "draws, seed, cutout settings or survey.n_shards); give another survey.dir "
                    "or delete that folder")
            try:
                parent = client.get_run(known["run_id"])
                if parent.info.status != "RUNNING":
                    client.update_run(parent.info.run_id, status="RUNNING")
                return parent.info.run_id
            except Exception as exc:  # noqa: BLE001 - deleted, or in another tracking store
                log.warning("parent run %s of %s not found (%s): a new one", known["run_id"],
                            survey_dir, exc)
        experiment = client.get_run(run.run_id).info.experiment_id
        parent = client.create_run(experiment, run_name=f"survey {survey_dir.name}", tags={
            "stage": "predict_survey", "survey_role": "parent", "survey_plan": plan,
            "survey_dir": str(survey_dir), "model_uri": str(cfg.model_uri),
            "input": str(cfg.input), "n_shards": str(int(cfg.survey.n_shards))})
        write_text_atomic(path, json.dumps({"run_id": parent.info.run_id, "plan": plan}))
        return parent.info.run_id


def read_shard_table(path: Path) -> pd.DataFrame:
    """A shard CSV as text (every value exactly as written, empty cells kept empty)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def merged(survey_dir: Path, expected) -> bool:
    """True when the survey catalogue and its rejects exist and were merged from exactly the
    ``expected`` shards (folder, fingerprint)."""
    out = Path(survey_dir) / CATALOGUE
    try:
        done = json.loads((Path(survey_dir) / MERGED_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (done.get("shards") == [fp for _, fp in expected] and out.is_file()
            and rejects_path(out).is_file())


def merge(client, parent: str, survey_dir: Path, expected) -> dict[str, float]:
    """Merge the shards into ``<survey_dir>/catalogue.csv`` and its rejects; log them on the
    parent run and end it FINISHED; return the survey's metrics.

    Parameters
    ----------
    client : mlflow.MlflowClient
    parent : str
        The parent run's id.
    survey_dir : pathlib.Path
    expected : list of (pathlib.Path, str)
        Every shard's folder and fingerprint.

    Notes
    -----
    Catalogue rows are sorted by run, camcol and field (stable: within a field, the input's
    order), rejects by star id and reason; values are copied as text, unchanged.

    Raises
    ------
    UserInputError
        A shard is missing or was made from other inputs (named).
    """
    tic = time.perf_counter()
    dones = [finished(folder, fp) for folder, fp in expected]
    missing = [str(folder) for (folder, _), d in zip(expected, dones, strict=True) if d is None]
    if missing:
        raise UserInputError(f"cannot merge: {len(missing)} shard(s) not finished for these "
                             f"inputs: {', '.join(missing[:5])}; run them first")
    cats = [read_shard_table(folder / CATALOGUE) for folder, _ in expected]
    rejs = [read_shard_table(rejects_path(folder / CATALOGUE)) for folder, _ in expected]
    rows = [c for c in cats if len(c)]  # an empty shard (no field, or all failed) adds none
    cat = pd.concat(rows, ignore_index=True) if rows else cats[0]
    if len(cat):
        order = cat[FIELD_KEYS].apply(pd.to_numeric, errors="coerce")
        cat = cat.loc[order.sort_values(FIELD_KEYS, kind="mergesort").index]
    rej = pd.concat(rejs, ignore_index=True).sort_values(["star_id", "reason"], kind="mergesort")
    out = Path(survey_dir) / CATALOGUE
    (Path(survey_dir) / MERGED_FILE).unlink(missing_ok=True)
    write_csv_atomic(cat, out, index=False)
    write_csv_atomic(rej, rejects_path(out), index=False)
    fields = [f for d in dones for f in d["fields"]]
    metrics = {"survey/n_shards": float(len(expected)), "survey/n_fields": float(len(fields)),
               "survey/n_fields_failed": float(sum(f["status"] == "failed" for f in fields)),
               "survey/n_stars": float(len(cat)), "survey/n_rejected": float(len(rej)),
               "survey/shard_seconds": float(sum(d["seconds"] for d in dones)),
               "survey/merge_seconds": time.perf_counter() - tic}
    client.log_artifact(parent, str(out), "catalogue")
    client.log_artifact(parent, str(rejects_path(out)), "catalogue")
    client.log_text(parent, json.dumps(fields, indent=2), "survey/fields.json")
    now = int(time.time() * 1000)
    for key, value in metrics.items():
        client.log_metric(parent, key, value, now)
    client.set_terminated(parent, "FINISHED")
    write_text_atomic(Path(survey_dir) / MERGED_FILE, json.dumps(
        {"shards": [fp for _, fp in expected], "n_stars": len(cat), "n_rejected": len(rej)}))
    print(f"wrote {out} ({len(cat)} stars from {len(expected)} shards) and "
          f"{rejects_path(out)} ({len(rej)} rejected)", flush=True)
    return metrics
