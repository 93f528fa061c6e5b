"""``stage=baseline`` end to end on a tiny dataset file, recorded in a temporary MLflow store."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stellarexp.models.baselines import SUFFIX, load_model
from tests.support.train import run_cli, run_job, write_tiny_dataset

FAST = ["+model.params.n_estimators=15", "evaluate.bootstrap=50"]
TAGS = {"stage", "model", "data", "data_fingerprint", "features", "target", "split", "git_commit",
        "seed", "host"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    return path, write_tiny_dataset(path, n=300, seed=11)


def _artifact_paths(client, run_id, path=None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifact_paths(client, run_id, f.path) if f.is_dir else {f.path}
    return out


@pytest.mark.parametrize("model,features", [("xgboost", "color"), ("lightgbm", "mag"),
                                            ("catboost", "color"), ("random_forest", "mag")])
def test_baseline_run_records_everything(home, tmp_path, dataset, model, features):
    import mlflow

    path, fingerprint = dataset
    value, run = run_job(["stage=baseline", f"model={model}", f"features={features}", "target=all",
                          f"data.dataset_path={path}", *FAST], tmp_path / "job")
    client = mlflow.MlflowClient()
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((home / "mlruns" / "artifacts").as_uri())
    tags = run.data.tags
    assert TAGS <= set(tags)
    assert (tags["stage"], tags["model"], tags["features"], tags["target"], tags["split"]) == \
        ("baseline", model, features, "all", "paper")
    assert tags["data_fingerprint"] == fingerprint and tags["seed"] == "42"
    params = run.data.params
    assert params["model.name"] == model and params["features.name"] == features
    assert params["model.params.n_estimators"] == "15"  # given on the command line
    # the per-target hyperparameters and the store settings are in config/config.yaml only
    assert not [k for k in params if k.startswith(("model.hparams.", "tracking."))]
    metrics = run.data.metrics
    for t in ("teff", "logg", "fe_h"):
        for m in ("sigma", "robust_sigma", "mae", "bias", "rmse"):
            lo, v, hi = (metrics[f"val/{m}_{t}{s}"] for s in ("_lo", "", "_hi"))
            assert lo <= v <= hi
        assert metrics[f"val/n_{t}"] + metrics[f"train/n_{t}"] == 300
        assert f"val/label_noise_{t}" in metrics
    assert not any(k.startswith("test/") for k in metrics)  # split=paper has no test subset
    assert value == pytest.approx(metrics["val/sigma_teff"])

    files = _artifact_paths(client, run.info.run_id)
    assert {"config/config.yaml", "config/overrides.yaml", "predictions.csv",
            "figures/pred_vs_true.png"} <= files
    assert {f"models/{t}{SUFFIX[model]}" for t in ("teff", "logg", "fe_h")} <= files
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "dl"))
    config = yaml.safe_load(Path(f"{local}/config/config.yaml").read_text())
    assert config["model"]["name"] == model and "hydra" not in config
    assert "n_estimators" in config["model"]["hparams"]["teff"] and config["tracking"]["experiment"]
    assert f"model={model}" in yaml.safe_load(Path(f"{local}/config/overrides.yaml").read_text())

    # the saved models predict what the predictions table says
    preds = pd.read_csv(f"{local}/predictions.csv")
    from stellarexp.data.features import features as feats
    from stellarexp.data.table import read_dataset_stars

    stars = read_dataset_stars(path).stars
    assert list(preds["star_id"]) == list(stars["star_id"])
    X = feats(stars, features).to_numpy()
    for t in ("teff", "logg", "fe_h"):
        reloaded = load_model(f"{local}/models/{t}{SUFFIX[model]}", trusted=True).predict(X)
        np.testing.assert_allclose(reloaded, preds[f"{t}_pred"], rtol=1e-5)
        val = preds["subset"] == "val"
        resid = preds.loc[val, f"{t}_pred"] - preds.loc[val, t]
        assert np.std(resid) == pytest.approx(metrics[f"val/sigma_{t}"], rel=1e-6)
        params_json = json.loads(Path(f"{local}/models/{t}.json").read_text())
        assert params_json["params"]["n_estimators"] == 15


def test_holdout_split_single_target(home, tmp_path, dataset):
    path, _ = dataset
    value, run = run_job(["model=random_forest", "features=color", "target=logg", "split=holdout",
                          f"data.dataset_path={path}", *FAST], tmp_path / "job")
    m = run.data.metrics
    assert run.data.tags["split"] == "holdout" and run.data.tags["target"] == "logg"
    assert {"val/sigma_logg", "test/sigma_logg", "test/sigma_logg_lo"} <= set(m)
    assert not any(k.endswith("_teff") for k in m)
    assert value == pytest.approx(m["val/sigma_logg"])  # sweeps optimise validation
    # holdout: folds 0-6 train, 7 val, 8-9 test
    assert m["test/n_logg"] > m["val/n_logg"] > 0


def test_explicit_optimized_metric_is_returned(home, tmp_path, dataset):
    path, _ = dataset
    value, run = run_job(["model=xgboost", "target=fe_h", "optimized_metric=val/mae_fe_h",
                          f"data.dataset_path={path}", *FAST], tmp_path / "job")
    assert value == pytest.approx(run.data.metrics["val/mae_fe_h"])


_WRAPPER = textwrap.dedent("""
    import json, runpy, sys
    sys.argv = ["stellarexp.train", *sys.argv[1:]]
    code = 0
    try:
        runpy.run_module("stellarexp.train", run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        print("PROBE" + json.dumps({"torch": "torch" in sys.modules}), flush=True)
    sys.exit(code)
""")


def test_multirun_goes_on_after_a_failed_job_and_never_imports_torch(tmp_path, dataset):
    """Subprocess from another directory: job 0 fails (no such dataset), job 1 still runs; the
    failed run is FAILED with its traceback; the process exits non-zero; torch is never loaded."""
    import mlflow

    home_dir = tmp_path / "home"
    path, fingerprint = dataset
    missing = tmp_path / "missing.h5"
    # data=sdss: a missing file is an error (data=synthetic would simulate the survey)
    proc = run_cli(["-c", _WRAPPER, "-m", "data=sdss", "model=random_forest", "target=teff",
                    f"data.dataset_path={missing},{path}", *FAST], home_dir, cwd=tmp_path)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.split("PROBE", 1)[1]) == {"torch": False}
    assert "DatasetError" in proc.stderr + proc.stdout
    assert (home_dir / "outputs" / "multirun").is_dir()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()

    client = mlflow.MlflowClient(f"sqlite:///{home_dir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("stellarexp").experiment_id],
                              order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    failed, ok = runs
    assert "DatasetError" in failed.data.tags["error"]
    trace = client.download_artifacts(failed.info.run_id, "error/traceback.txt", str(tmp_path))
    assert "missing.h5" in Path(trace).read_text()
    assert ok.data.tags["data_fingerprint"] == fingerprint and "val/sigma_teff" in ok.data.metrics


def test_single_failed_run_exits_nonzero(tmp_path):
    home_dir = tmp_path / "home"
    proc = run_cli(["-m", "stellarexp.train", "data=sdss", "model=xgboost",
                    f"data.dataset_path={tmp_path}/none.h5"], home_dir, cwd=tmp_path)
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr


@pytest.mark.slow  # builds the tiny survey when no other test has (about 1 min of CPU)
def test_baseline_on_the_pipelines_tiny_dataset(home, tmp_path, tiny_survey):
    """The real data flow: the dataset file built by the pipeline (conftest's tiny survey)."""
    from stellarexp.data.dataset import read_attrs

    path = tiny_survey["dataset"]
    value, run = run_job(["data=synthetic", "data.size=tiny", f"data.dataset_path={path}",
                          "model=lightgbm", "features=mag", *FAST], tmp_path / "job")
    assert run.info.status == "FINISHED"
    assert run.data.tags["data_fingerprint"] == read_attrs(path)["fingerprint"]
    assert run.data.tags["data"] == "synthetic"
    m = run.data.metrics
    assert all(np.isfinite(m[f"val/sigma_{t}"]) for t in ("teff", "logg", "fe_h"))
    assert value == pytest.approx(m["val/sigma_teff"])
