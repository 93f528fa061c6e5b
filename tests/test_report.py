"""The Table-2 report equals the metrics of the runs it selects."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest

from stellarexp.tracking import compare, row_sources, table_format
from tests.support.train import run_cli, run_job, write_tiny_dataset

FAST = ["+model.params.n_estimators=10", "evaluate.bootstrap=30"]


@pytest.fixture(scope="module")
def runs(store_home, tmp_path_factory):
    """Baseline runs on one tiny dataset: a repeated configuration, per-target runs, a failed run
    and a run on another split."""
    mp = pytest.MonkeyPatch()
    mp.setenv("STELLAREXP_HOME", str(store_home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "tiny.h5"
    fingerprint = write_tiny_dataset(path, n=240, seed=21)
    data = [f"data.dataset_path={path}", "tracking.experiment=report-test"]

    def job(name, *overrides):
        return run_job([*data, *FAST, *overrides], tmp / name)[1]

    out = {"path": path, "fingerprint": fingerprint, "tmp": tmp, "data": data}
    out["old"] = job("old", "model=xgboost", "features=color")
    out["new"] = job("new", "model=xgboost", "features=color")
    out["rf_teff"] = job("rf_teff", "model=random_forest", "features=mag", "target=teff")
    out["rf_logg"] = job("rf_logg", "model=random_forest", "features=mag", "target=logg")
    with pytest.raises(TypeError):  # an unknown RandomForest argument: the run ends FAILED
        job("failed", "model=random_forest", "features=color", "+model.params.bogus=1")
    failed = mlflow.last_active_run()
    assert failed.info.status == "FAILED" and failed.data.tags["data_fingerprint"] == fingerprint
    out["holdout"] = job("holdout", "model=xgboost", "features=mag", "split=holdout")
    yield out
    mp.undo()


def _report(runs, name, *overrides):
    value, run = run_job(["stage=report", *runs["data"], *overrides], runs["tmp"] / name)
    assert value is None and run.info.status == "FINISHED"
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="comparison",
                                                dst_path=str(runs["tmp"] / f"{name}-dl"))
    return run, pd.read_csv(f"{local}/comparison.csv").set_index("key"), local


def test_report_equals_the_runs_metrics(home, store_home, runs, capsys):
    """One test, so that xdist does not build the runs of the fixture on two workers."""
    _check_latest_runs(runs, capsys)
    _check_explicit_run_ids(runs)
    _check_holdout_uses_test_metrics(runs)
    _check_command_prints_markdown(runs, store_home)


def _check_latest_runs(runs, capsys):
    run, table, local = _report(runs, "paper")
    assert run.data.tags["stage"] == "report" and run.data.tags["mlflow.runName"] == "comparison"
    assert run.data.tags["data_fingerprint"] == runs["fingerprint"]
    assert "model" not in run.data.tags  # a comparison has no model
    # failed runs and the holdout run are not part of the paper-split table
    assert list(table.index) == ["random_forest_mag", "xgboost_color", "label_noise", "label_std"]
    new = runs["new"].data.metrics
    row = table.loc["xgboost_color"]
    for t in ("teff", "logg", "fe_h"):
        assert row[f"sigma_{t}"] == pytest.approx(new[f"val/sigma_{t}"], rel=1e-12)
        assert row[f"sigma_{t}_lo"] == pytest.approx(new[f"val/sigma_{t}_lo"], rel=1e-12)
        assert row[f"sigma_{t}_hi"] == pytest.approx(new[f"val/sigma_{t}_hi"], rel=1e-12)
        assert row[f"run_{t}"] == runs["new"].info.run_id  # the latest of the repeated runs
    assert row["paper_teff"] == 189.73 and row["paper_logg"] == 0.66 and row["paper_fe_h"] == 0.25
    rf = table.loc["random_forest_mag"]
    assert rf["sigma_teff"] == pytest.approx(runs["rf_teff"].data.metrics["val/sigma_teff"])
    assert rf["sigma_logg"] == pytest.approx(runs["rf_logg"].data.metrics["val/sigma_logg"])
    assert math.isnan(rf["sigma_fe_h"]) and rf["paper_teff"] == 239.82
    noise, spread = table.loc["label_noise"], table.loc["label_std"]
    preds = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=runs["new"].info.run_id, artifact_path="predictions.csv",
        dst_path=str(runs["tmp"] / "new-preds")))
    for t in ("teff", "logg", "fe_h"):
        assert noise[f"sigma_{t}"] == pytest.approx(new[f"val/label_noise_{t}"])
        # the label standard deviation is that of the validation labels the sigma is taken on
        val = preds[(preds["subset"] == "val") & preds[f"{t}_pred"].notna()]
        assert spread[f"sigma_{t}"] == pytest.approx(val[t].to_numpy().std())

    printed = capsys.readouterr().out
    assert "| XGBoost_color |" in printed and "| RF_mag |" in printed
    assert "val subset of split=paper" in printed and "label noise floor" in printed
    assert f"{new['val/sigma_teff']:.1f} [{new['val/sigma_teff_lo']:.1f}, " in printed
    assert Path(f"{local}/comparison.md").read_text().strip() in printed
    assert "<table" in Path(f"{local}/comparison.html").read_text()


def _check_explicit_run_ids(runs):
    old = runs["old"]
    _, table, _ = _report(runs, "explicit", f"stage.run_ids=[{old.info.run_id}]")
    assert list(table.index) == ["xgboost_color", "label_noise", "label_std"]
    assert table.loc["xgboost_color", "sigma_teff"] == pytest.approx(old.data.metrics["val/sigma_teff"])


def _check_holdout_uses_test_metrics(runs):
    _, table, local = _report(runs, "holdout", "split=holdout")
    assert list(table.index) == ["xgboost_mag", "label_noise", "label_std"]
    m = runs["holdout"].data.metrics
    assert table.loc["xgboost_mag", "sigma_logg"] == pytest.approx(m["test/sigma_logg"])
    assert "test subset of split=holdout" in Path(f"{local}/comparison.md").read_text()


def _check_command_prints_markdown(runs, store_home):
    proc = run_cli(["-m", "stellarexp.report", *runs["data"]], store_home)
    assert proc.returncode == 0, proc.stderr
    assert "| method | Teff (K) | Teff paper |" in proc.stdout
    assert "| XGBoost_color |" in proc.stdout


def _fake_run(run_id, start, tags, metrics):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=start),
                           data=SimpleNamespace(tags=tags, metrics=metrics))


def test_image_model_rows_come_from_a_registered_source(monkeypatch):
    monkeypatch.setattr(row_sources, "ROW_SOURCES", dict(row_sources.ROW_SOURCES))
    row_sources.register_row_source(row_sources.RowSource(name="head", stage="head",
                                                          key="convit_{model}", paper_key="ours"))
    base = _fake_run("b", 1, {"model": "catboost", "features": "mag"}, {"val/sigma_teff": 250.0})
    head = _fake_run("h", 2, {"model": "convit"}, {"val/sigma_teff": 170.0, "val/sigma_teff_lo": 165.0,
                                                   "val/sigma_teff_hi": 175.0, "val/sigma_logg": 0.4})
    comp = compare.build({"baseline": [base], "head": [head]}, split="paper", subset="val",
                         fingerprint="f" * 64)
    assert [r.key for r in comp.rows] == ["catboost_mag", "convit_convit"]
    row = comp.rows[1]
    assert row.paper["teff"] == 172.37 and row.cells["teff"].value == 170.0
    md = table_format.to_markdown(comp)
    assert "170.0 [165.0, 175.0]" in md and "| CatBoost_mag | 250.0 |" in md
    assert "label noise floor" not in md  # no truth, no floor row


def test_sweep_trials_are_not_the_methods_result():
    """The report skips runs that are trials of an Optuna sweep (tagged optuna_trial)."""

    class Page(list):
        token = None

    class Client:
        def search_experiments(self, view_type=None):
            return [SimpleNamespace(experiment_id="1")]

        def search_runs(self, ids, flt, view, max_results, order_by, page_token):
            assert "tags.stage = 'baseline'" in flt
            return Page([_fake_run("trial", 3, {"optuna_trial": "29", "model": "xgboost"}, {}),
                         _fake_run("plain", 2, {"model": "xgboost"}, {})])

    runs = compare.search_finished(Client(), stage="baseline", fingerprint="f", split="paper")
    assert [r.info.run_id for r in runs] == ["plain"]
