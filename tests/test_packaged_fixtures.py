"""Shared fixture of the package/predict tests: a tiny trained image model, packaged and registered.

One STELLAREXP_HOME per test session holding an MLflow store with a tiny backbone, a
three-target head, the logg classifier and logg heads (trained for an epoch or two on a 96-star
image dataset) and a ``stage=package`` run registered as ``tiny-convit`` version 1.
"""

from __future__ import annotations

import shutil

import pytest

from tests.test_train_fixtures import migrated_db, run_job

TINY_BACKBONE = ["stage=backbone", "model=convit", "model.patch_size=16", "model.depth=2",
                 "model.local_up_to_layer=1", "model.embed_dim_per_head=8", "stage.batch_size=8",
                 "stage.eval_batch_size=64", "stage.limit_train_batches=4",
                 "stage.progress_bar=false", "stage.averaging.k=2", "stage.averaging.smooth=1",
                 "evaluate.bootstrap=20", "trainer.n_jobs=1"]
TINY_HEAD = ["model=convit", "stage.hidden=[16,16]", "stage.max_epochs=2", "stage.batch_size=16",
             "stage.n_samples=30", "stage.eval_samples=5", "stage.progress_bar=false",
             "evaluate.bootstrap=20", "trainer.n_jobs=1", "++stage.figures=false"]
MODEL_NAME = "tiny-convit"


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> dict:
    """``{"home", "dataset", "model_uri", "run": <package run>, "runs": {stage: run}}``."""
    import torch

    from tests.test_stage_backbone import write_image_dataset

    home = tmp_path_factory.mktemp("pkg-home")
    (home / "mlruns").mkdir()
    shutil.copyfile(migrated_db(), home / "mlruns" / "mlflow.db")
    path = home / "img.h5"
    write_image_dataset(path, n=96, seed=5)
    data = f"data.dataset_path={path}"
    torch.set_num_threads(1)
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STELLAREXP_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        jobs = home / "jobs"
        _, runs["backbone"] = run_job([*TINY_BACKBONE, "target=all", "stage.max_epochs=1", data],
                                      jobs / "bb")
        _, runs["head"] = run_job(["stage=head", *TINY_HEAD, "target=all", data], jobs / "head")
        _, runs["logg_classifier"] = run_job(["stage=logg_classifier", *TINY_HEAD, "target=logg",
                                              data], jobs / "clf")
        _, runs["logg_heads"] = run_job(["stage=logg_heads", *TINY_HEAD, "target=logg", data],
                                        jobs / "heads")
        _, pkg = run_job(["stage=package", f"stage.model_name={MODEL_NAME}", "stage.n_samples=40",
                          data], jobs / "package")
    for name, r in {**runs, "package": pkg}.items():
        assert r.info.status == "FINISHED", (name, r.data.tags.get("error"))
    return {"home": home, "dataset": path, "model_uri": f"models:/{MODEL_NAME}/1", "run": pkg,
            "runs": runs}


@pytest.fixture
def pkg_home(tiny_package, monkeypatch):
    """Point STELLAREXP_HOME (and so the MLflow store) at the tiny package's home."""
    monkeypatch.setenv("STELLAREXP_HOME", str(tiny_package["home"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    from stellarexp.tracking import store

    store.connect()
    return tiny_package["home"]
