"""``model.side_inputs=[parallax]``: the image heads and the logg classifier read the parallax
beside the frozen backbone's features, the packaged model needs it and the catalogue gets it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.images import HEAD, TINY, write_image_dataset
from tests.support.train import run_job

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def side_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("side") / "img.h5"
    return path, write_image_dataset(path, n=160, seed=11)


def test_heads_read_the_parallax_and_the_package_needs_it(home, tmp_path, side_data):
    import mlflow

    from stellarexp.data.dataset import read_images, read_stars
    from stellarexp.data.features import side_input_frame
    from stellarexp.models.package_format import PackageError
    from stellarexp.models.package_predictor import Predictor

    torch.set_num_threads(1)
    path, _ = side_data
    data = f"data.dataset_path={path}"
    run_job([*TINY, "target=all", "stage.max_epochs=1", data], tmp_path / "bb")
    side = "model.side_inputs=[parallax]"
    _, head = run_job([*HEAD, "target=all", side, data], tmp_path / "head")
    _, plain = run_job([*HEAD, "target=all", data], tmp_path / "plain")
    assert head.data.tags["side_inputs"] == "parallax" and head.data.tags["side_key"] == "_parallax"
    assert plain.data.tags["side_inputs"] == ""
    client = mlflow.MlflowClient()
    meta = json.loads(Path(client.download_artifacts(head.info.run_id, "head/model.json",
                                                     str(tmp_path / "m"))).read_text())
    assert meta["side_inputs"]["kinds"] == ["parallax"]
    assert meta["side_inputs"]["columns"] == ["plx_lum_r", "plx_lum_r_err"]
    assert meta["hparams"]["in_features"] == 32 + 2  # backbone width + the two side columns
    # the two-stage logg needs a classifier with the same side inputs
    hb = ["stage.hidden=[16,16]", "stage.max_epochs=2", "stage.batch_size=16", "stage.n_samples=30",
          "stage.eval_samples=5", "stage.progress_bar=false", "model=convit", "trainer.n_jobs=1",
          "stage.recalibration.method=variance", "evaluate.bootstrap=20"]
    _, clf = run_job(["stage=logg_classifier", *hb, "target=logg", data], tmp_path / "clf")
    with pytest.raises(LookupError, match="with side inputs"):
        run_job(["stage=logg_heads", *hb, "target=logg", side, data], tmp_path / "heads_bad")
    _, clf_p = run_job(["stage=logg_classifier", *hb, "target=logg", side, data], tmp_path / "clfp")
    _, heads = run_job(["stage=logg_heads", *hb, "target=logg", side, data], tmp_path / "heads")
    assert heads.info.status == "FINISHED"
    assert heads.data.tags["classifier_run_id"] == clf_p.info.run_id != clf.info.run_id
    # its one-stage yardstick is the head with the same side inputs, not the newer plain one
    assert heads.data.metrics["val/sigma_onestage_logg"] == head.data.metrics["val/sigma_logg"] \
        != plain.data.metrics["val/sigma_logg"]
    # the package carries the side inputs of its parts
    _, pkg = run_job(["stage=package", f"stage.runs.head={head.info.run_id}", "stage.n_samples=20",
                      "stage.model_name=side-pkg", data], tmp_path / "pkg")
    assert pkg.data.tags["classifier_run_id"] == clf_p.info.run_id
    folder = Path(client.download_artifacts(pkg.info.run_id, "model/artifacts/package",
                                            str(tmp_path / "pk")))
    predictor = Predictor(folder)
    assert predictor.side_inputs == ["parallax"]
    stars = read_stars(path).iloc[:12].reset_index(drop=True)
    images = read_images(path, np.arange(12))
    with pytest.raises(PackageError, match="read side inputs"):
        predictor.predict(images)
    out = predictor.predict(images, side=side_input_frame(stars, ["parallax"]), seed=1)
    assert np.isfinite(out["logg_mean"]).all()
    # a different parallax changes the prediction; a missing one is no error
    moved = stars.assign(parallax=stars["parallax"] * 5.0)
    out2 = predictor.predict(images, side=side_input_frame(moved, ["parallax"]), seed=1)
    assert not np.allclose(out["logg_mean"], out2["logg_mean"])
    gone = stars.assign(parallax=np.nan)
    assert np.isfinite(predictor.predict(images, side=side_input_frame(gone, ["parallax"]),
                                         seed=1)["logg_mean"]).all()


def test_unknown_side_inputs_are_named():
    from stellarexp.data.features import side_input_frame

    with pytest.raises(ValueError, match="choose from"):
        side_input_frame(pd.DataFrame({"parallax": [1.0]}), ["distance"])


def test_classifier_accuracy_against_truth_and_the_label_ceiling():
    from stellarexp.stages.logg import truth_accuracy

    truth = np.array([4.5, 4.5, 3.0, 3.0, 4.1, np.nan])
    labels = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # star 3 and 4 are labelled across 4 dex
    p = np.array([0.9, 0.8, 0.2, 0.9, 0.6, 0.9])
    m = truth_accuracy(p, labels, truth, 4.0, "val")
    assert m["val/accuracy_truth_logg"] == pytest.approx(4 / 5)
    assert m["val/label_truth_agreement_logg"] == pytest.approx(3 / 5)
