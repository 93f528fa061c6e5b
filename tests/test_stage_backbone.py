"""``stage=backbone`` end to end on a tiny image dataset, in a temporary MLflow store: per-epoch
metrics, the averaged artifact (reloaded: it reproduces the logged sigma), resume after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.train import make_stars, run_job

torch = pytest.importorskip("torch")

TINY = ["stage=backbone", "model=convit", "model.patch_size=16", "model.depth=2",
        "model.local_up_to_layer=1", "model.embed_dim_per_head=8", "stage.batch_size=8",
        "stage.eval_batch_size=64", "stage.limit_train_batches=4", "stage.progress_bar=false",
        "stage.averaging.k=2", "stage.averaging.smooth=1", "evaluate.bootstrap=20",
        "trainer.n_jobs=1"]


def write_image_dataset(path, n: int = 96, seed: int = 0) -> str:
    """Dataset file whose star flux and colours follow the labels (a Gaussian blob per band)."""
    from stellarexp.data.dataset import DatasetContent, write_dataset

    stars = make_stars(n, seed)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48] - 23.5
    blob = np.exp(-(xx ** 2 + yy ** 2) / (2 * 2.0 ** 2))
    images = rng.normal(0, 0.05, (n, 5, 48, 48)).astype(np.float32)
    for b, band in enumerate("ugriz"):
        flux = 10 ** (-0.4 * (stars[f"psfmag_{band}"].to_numpy() - 22.5))  # nanomaggies
        images[:, b] += (flux[:, None, None] * blob / blob.sum()).astype(np.float32)
    return write_dataset(path, DatasetContent(images=images, stars=stars, name=f"img-{seed}",
                                              funnel=[("all", n)]))


@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("imgdata") / "img.h5"
    return path, write_image_dataset(path)


def _artifacts(client, run_id, path=None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


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
    files = _artifacts(client, run.info.run_id)
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
