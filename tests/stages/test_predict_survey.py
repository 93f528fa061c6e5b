"""``stage=predict_survey``: shards by field, the merged catalogue equal to ``stage=predict`` on
the whole table, a rerun that skips finished shards, a bad field recorded and skipped, one
MLflow parent run with a child per shard."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from stellarexp.stages import predict, predict_survey, survey_merge
from tests.support.train import run_job

torch = pytest.importorskip("torch")


def test_fields_are_cut_into_contiguous_sorted_shards():
    keys = ["9000-2-3", "9000-1-11", "9000-1-2", "9000-1-11", "8000-6-1"]
    assert predict_survey.shard_fields(keys, 2) == [["8000-6-1", "9000-1-2"],
                                                    ["9000-1-11", "9000-2-3"]]
    # more shards than fields: the extra shards are empty, never an error
    assert predict_survey.shard_fields(keys[:1], 3) == [["9000-2-3"], [], []]


def test_batches_restart_in_each_field_with_a_stable_seed():
    stars = pd.DataFrame({"run": [1, 1, 1, 2, 2], "camcol": 1, "field": [5, 5, 6, 6, 6]})
    assert predict.field_blocks(stars) == [("1-1-5", 0, 2), ("1-1-6", 2, 3), ("2-1-6", 3, 5)]
    assert predict.field_blocks(stars.drop(columns="run")) == [("", 0, 5)]
    assert predict.field_blocks(stars.iloc[:0]) == []
    seeds = {predict.batch_seed(0, k, i) for k in ("1-1-5", "1-1-6") for i in (0, 1)}
    assert len(seeds) == 4 and predict.batch_seed(0, "1-1-5", 0) == predict.batch_seed(0, "1-1-5", 0)


def test_a_shard_counts_as_finished_only_with_its_fingerprint_and_files(tmp_path):
    folder = survey_merge.shard_dir(tmp_path, 3)
    assert folder == tmp_path / "shards" / "0003"
    cat = pd.DataFrame({"star_id": ["1"], "run": [1], "camcol": [1], "field": [1]})
    rej = pd.DataFrame({"star_id": ["2"], "reason": ["photo_flags"], "detail": ["u"]})
    survey_merge.write_shard(folder, cat, rej, {"fingerprint": "abc", "n_stars": 1})
    assert survey_merge.finished(folder, "abc")["n_stars"] == 1
    assert survey_merge.finished(folder, "other") is None
    (folder / "catalogue_rejects.csv").unlink()
    assert survey_merge.finished(folder, "abc") is None


def _survey_input(tiny_survey, tmp_path) -> tuple[Path, Path]:
    """The tiny survey's cross-match (2 fields) plus a third field whose frames do not exist."""
    root = Path(tiny_survey["summary"]["root"])
    cross = pd.read_csv(root / "crossmatch.csv")
    bad = cross.iloc[:3].copy()
    bad["camcol"], bad["field"] = 6, 99
    bad["objID"] = bad["objID"] + 10**6
    table = tmp_path / "survey_crossmatch.csv"
    pd.concat([cross, bad], ignore_index=True).to_csv(table, index=False)
    return table, root


@pytest.mark.slow  # 20-60 s (by load): three shards and the unsharded prediction, tiny survey
def test_shards_merge_to_the_unsharded_catalogue_and_a_rerun_skips_them(
        pkg_home, tiny_package, tiny_survey, tmp_path):
    import mlflow

    table, root = _survey_input(tiny_survey, tmp_path)
    common = [f"model_uri={tiny_package['model_uri']}", f"input={table}", f"frame_root={root}",
              "stage.progress_bar=false", "trainer.n_jobs=1"]
    survey = tmp_path / "survey"
    shard_args = ["stage=predict_survey", *common, f"survey.dir={survey}", "survey.n_shards=3"]
    runs = [run_job([*shard_args, f"survey.shard={k}"], tmp_path / f"shard{k}")[1]
            for k in range(3)]
    _, whole = run_job(["stage=predict", *common, f"output={tmp_path / 'whole.csv'}"],
                       tmp_path / "whole")
    assert whole.info.status == "FINISHED"

    # the same rows and values, byte for byte
    merged = (survey / "catalogue.csv").read_bytes()
    assert merged == (tmp_path / "whole.csv").read_bytes()
    assert len(pd.read_csv(survey / "catalogue.csv")) == whole.data.metrics["predict/n_stars"] > 0

    # the field without frames: skipped with its reason, its shard finished
    rej = pd.read_csv(survey / "catalogue_rejects.csv", dtype=str, keep_default_na=False)
    failed = rej[rej["reason"] == "field_failed"]
    assert len(failed) == 3 and failed["detail"].str.contains("field 9000-6-99").all()
    done = json.loads((survey / "shards" / "0002" / "done.json").read_text())
    assert [f["status"] for f in done["fields"]] == ["failed"]
    assert not (survey / "shards" / "0000" / "fields").exists()  # cutouts not kept

    # MLflow: one parent, FINISHED, holding the merged catalogue; a child per shard
    client = mlflow.MlflowClient()
    parent = json.loads((survey / "parent_run.json").read_text())["run_id"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent}
    assert [r.data.tags["survey_shard"] for r in runs] == ["0", "1", "2"]
    prun = client.get_run(parent)
    assert prun.info.status == "FINISHED"
    assert prun.data.metrics["survey/n_fields_failed"] == 1.0
    assert {a.path for a in client.list_artifacts(parent, "catalogue")} == {
        "catalogue/catalogue.csv", "catalogue/catalogue_rejects.csv"}

    # a rerun skips the finished shard: nothing recomputed, nothing rewritten
    marker = survey / "shards" / "0000" / "done.json"
    before = (marker.stat().st_mtime_ns, (survey / "catalogue.csv").stat().st_mtime_ns)
    _, again = run_job([*shard_args, "survey.shard=0"], tmp_path / "again")
    assert again.data.metrics["survey/shard_skipped"] == 1.0
    assert again.data.tags["mlflow.parentRunId"] == parent
    assert (marker.stat().st_mtime_ns, (survey / "catalogue.csv").stat().st_mtime_ns) == before
    assert client.get_run(parent).info.status == "FINISHED"  # reopened, then ended again
    assert runs[2].data.metrics["survey/merged_here"] == 1.0  # the last shard merged
    assert runs[2].data.metrics["survey/n_stars"] == 0  # its own stars, not the survey's

    # another model or table in the same folder is refused, naming the folder
    from stellarexp.data.pipeline import UserInputError

    with pytest.raises(UserInputError, match="holds a survey of other inputs"):
        run_job([*shard_args, "survey.n_shards=2", "survey.shard=0"], tmp_path / "other")


def test_clear_errors_for_a_missing_table_and_a_shard_out_of_range(pkg_home, tiny_package,
                                                                   tiny_survey, tmp_path):
    from stellarexp.data.pipeline import UserInputError

    base = ["stage=predict_survey", f"model_uri={tiny_package['model_uri']}",
            f"survey.dir={tmp_path / 's'}", "stage.progress_bar=false"]
    with pytest.raises(UserInputError, match="no_such.csv: file not found"):
        run_job([*base, f"input={tmp_path / 'no_such.csv'}", "survey.shard=0"], tmp_path / "a")
    table, root = _survey_input(tiny_survey, tmp_path)
    with pytest.raises(UserInputError, match=r"survey.shard=5: must be in 0..1"):
        run_job([*base, f"input={table}", f"frame_root={root}", "survey.shard=5"], tmp_path / "b")
    with pytest.raises(UserInputError, match="cannot merge: 2 shard"):
        run_job([*base, f"input={table}", f"frame_root={root}"], tmp_path / "c")


@pytest.mark.parametrize("launcher, target", [("local", "JoblibLauncher"),
                                              ("slurm", "SlurmLauncher")])
def test_the_survey_composes_with_the_project_launchers(launcher, target):
    from tests.test_launchers import _compose

    cfg = _compose(["stage=predict_survey", "model_uri=models:/m/1", "input=x.csv",
                    "survey.dir=/tmp/s", "survey.n_shards=8", f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.stage.name == "predict_survey" and cfg.survey.shard is None
    assert cfg.stage.batch_size == 256 and cfg.frame_root is None  # stage=predict's defaults


def test_merge_keeps_the_columns_when_a_shard_is_empty(tmp_path):
    from unittest import mock

    full = pd.DataFrame({"star_id": ["7", "5"], "run": [2, 1], "camcol": 1, "field": 3,
                         "teff_mean": ["5000.5", "4000.25"]})
    rej = pd.DataFrame(columns=["star_id", "reason", "detail"])
    survey_merge.write_shard(survey_merge.shard_dir(tmp_path, 0),
                             pd.DataFrame(columns=["teff_mean"]), rej, {"fingerprint": "a"})
    survey_merge.write_shard(survey_merge.shard_dir(tmp_path, 1), full, rej, {"fingerprint": "b"})
    for k, fp in ((0, "a"), (1, "b")):
        done = survey_merge.shard_dir(tmp_path, k) / "done.json"
        done.write_text(json.dumps({"fingerprint": fp, "fields": [], "seconds": 1.0}))
    expected = [(survey_merge.shard_dir(tmp_path, 0), "a"), (survey_merge.shard_dir(tmp_path, 1), "b")]
    metrics = survey_merge.merge(mock.MagicMock(), "parent", tmp_path, expected)
    merged = pd.read_csv(tmp_path / "catalogue.csv", dtype=str)
    assert list(merged.columns) == list(full.columns)
    assert merged["star_id"].tolist() == ["5", "7"]  # sorted by run, camcol, field
    assert metrics["survey/n_stars"] == 2 and survey_merge.merged(tmp_path, expected)


@pytest.mark.slow  # ~45 s: a multirun of 2 shards on 2 joblib workers, then stage=predict
def test_two_local_workers_through_the_joblib_launcher(pkg_home, tiny_package, tiny_survey,
                                                        tmp_path):
    import mlflow

    from tests.support.train import run_cli

    root = Path(tiny_survey["summary"]["root"])
    common = [f"model_uri={tiny_package['model_uri']}", f"input={root / 'crossmatch.csv'}",
              f"frame_root={root}", "stage.progress_bar=false", "trainer.n_jobs=1"]
    survey = tmp_path / "survey"
    out = run_cli(["-m", "stellarexp.train", "-m", "stage=predict_survey", *common,
                   f"survey.dir={survey}", "survey.n_shards=2", "survey.shard=range(0,2)",
                   "hydra/launcher=local", "hydra.launcher.n_jobs=2"], pkg_home, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run_job(["stage=predict", *common, f"output={tmp_path / 'whole.csv'}"], tmp_path / "whole")
    assert (survey / "catalogue.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    parent = json.loads((survey / "parent_run.json").read_text())["run_id"]
    client = mlflow.MlflowClient()
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.tags["survey_shard"] for r in children) == ["0", "1"]
    assert str(os.getpid()) not in {r.data.tags["pid"] for r in children}  # worker processes
    assert client.get_run(parent).info.status == "FINISHED"
