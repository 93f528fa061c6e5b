"""``stage=backbone`` end to end on a tiny image dataset, in a temporary MLflow store: per-epoch
metrics, the averaged artifact (reloaded: it reproduces the logged sigma), resume after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.images import TINY, artifact_paths, write_image_dataset
from tests.support.train import run_job

torch = pytest.importorskip("torch")

@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("imgdata") / "img.h5"
    return path, write_image_dataset(path)


def test_backbone_run_logs_curves_and_an_averaged_artifact(home, tmp_path, image_dataset):
    import mlflow

    from stellarexp.data.datamodule import StarDataModule
    from stellarexp.models.image_module import residual_sigma
    from stellarexp.stages.image_common import find_backbone_run, load_backbone

    torch.set_num_threads(1)
    path, fingerprint = image_dataset
    value, run = run_job([*TINY, "target=all", "stage.max_epochs=3",
                          f"data.dataset_path={path}"], tmp_path / "job")
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["stage"] == "backbone" and tags["targets"] == "teff,logg,fe_h"
    assert tags["data_fingerprint"] == fingerprint and "features" not in tags
    client = mlflow.MlflowClient()
    # one value per epoch for the curves, then the final (averaged) value one step later
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1, 2]
    hist = client.get_metric_history(run.info.run_id, "val/sigma_teff")
    assert sorted({m.step for m in hist}) == [0, 1, 2, 3]
    assert metrics["averaging/n_used"] == 2 and metrics["train/epochs"] == 3
    for t in ("teff", "logg", "fe_h"):
        assert metrics[f"val/sigma_{t}_lo"] <= metrics[f"val/sigma_{t}"] <= metrics[f"val/sigma_{t}_hi"]
        assert np.isfinite(metrics[f"val/sigma_best_{t}"])
    assert value == pytest.approx(metrics["val/sigma_teff"])
    files = artifact_paths(client, run.info.run_id)
    assert {"backbone/weights.pt", "backbone/model.json", "backbone/scalers.json",
            "backbone/averaging.json", "figures/backbone_learning_curves.png"} <= files
    info = json.loads(Path(client.download_artifacts(run.info.run_id, "backbone/averaging.json",
                                                     str(tmp_path / "dl"))).read_text())
    assert info["plan"]["used"] == [info["plan"]["overfit_epoch"] - 1, info["plan"]["overfit_epoch"]] \
        or len(info["plan"]["used"]) == 2
    # ring on disk is bounded: k + patience + smooth + 1 snapshots at most
    assert len(list(Path(tags["checkpoint_dir"], "snapshots").glob("epoch-*.pt"))) == 3

    # found by data/split/target, reloaded into a fresh model: reproduces the logged sigma
    found = find_backbone_run(client, fingerprint=fingerprint, split="paper", targets=["logg"])
    assert found.info.run_id == run.info.run_id
    bb = load_backbone(client, found)
    scalers = json.loads(Path(client.download_artifacts(
        run.info.run_id, "backbone/scalers.json", str(tmp_path / "dl2"))).read_text())
    dm = StarDataModule(path, split="paper", targets=bb.targets, eval_batch_size=64,
                        band_scales=scalers["band_scaler"]["scales"],
                        label_scaler=scalers["label_scaler"])
    with torch.no_grad():
        batches = list(dm.val_dataloader())
        pred = torch.cat([bb.model(b["image"]) for b in batches]).numpy().astype(float)
        true = torch.cat([b["target"] for b in batches]).numpy().astype(float)
    sig = residual_sigma(bb.label_scaler.inverse(pred), bb.label_scaler.inverse(true))
    for t, s in zip(bb.targets, sig):
        assert s == pytest.approx(metrics[f"val/sigma_{t}"], rel=1e-4)
    with pytest.raises(LookupError, match="no FINISHED backbone"):
        find_backbone_run(client, fingerprint="0" * 64, split="paper", targets=["teff"])


def test_resume_after_an_interruption(home, tmp_path, image_dataset, monkeypatch):
    from stellarexp.models.image_module import BackboneModule

    torch.set_num_threads(1)
    path, _ = image_dataset
    original = BackboneModule.on_train_epoch_end

    def crash_after_second_epoch(self):
        original(self)
        if self.current_epoch == 1:
            raise RuntimeError("simulated interruption")

    monkeypatch.setattr(BackboneModule, "on_train_epoch_end", crash_after_second_epoch)
    ckpt = tmp_path / "ckpt"
    args = [*TINY, "target=teff", f"data.dataset_path={path}", f"stage.checkpoint_dir={ckpt}"]
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_job([*args, "stage.max_epochs=4"], tmp_path / "job1")
    assert (ckpt / "last.ckpt").is_file()
    monkeypatch.setattr(BackboneModule, "on_train_epoch_end", original)

    _, run = run_job([*args, "stage.max_epochs=4"], tmp_path / "job2")  # resume=auto
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from"] == str(ckpt / "last.ckpt")
    # the history carried over: 4 epochs in all, only epochs 2 and 3 trained in this run
    assert run.data.metrics["train/epochs"] == 4
    import mlflow

    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/loss")]
    assert steps == [2, 3]
