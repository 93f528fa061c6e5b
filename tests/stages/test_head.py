"""``stage=head`` on a tiny backbone: linked through MLflow, features cached, metrics logged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.support.images import HEAD, TINY, write_image_dataset
from tests.support.train import run_job

torch = pytest.importorskip("torch")

# variance recalibration: the tiny set's halves of ~10 validation stars are too few for a
# conformal 95% factor (it would be infinite and the out-of-sample scores skipped)
@pytest.fixture(scope="module")
def backbone_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("headdata") / "img.h5"
    return path, write_image_dataset(path, n=96, seed=5)


def test_head_links_to_its_backbone_and_logs_uncertainties(home, tmp_path, backbone_data):
    import mlflow

    from stellarexp.stages.image_common import features_cache_dir

    torch.set_num_threads(1)
    path, fingerprint = backbone_data
    _, bb = run_job([*TINY, "target=all", "stage.max_epochs=1", f"data.dataset_path={path}"],
                    tmp_path / "bb")
    value, run = run_job([*HEAD, "target=teff", f"data.dataset_path={path}"], tmp_path / "head")
    assert run.info.status == "FINISHED"
    tags, m = run.data.tags, run.data.metrics
    assert tags["backbone_run_id"] == bb.info.run_id and tags["stage"] == "head"
    assert tags["data_fingerprint"] == fingerprint
    assert value == pytest.approx(m["val/sigma_teff"]) and m["val/sigma_teff"] > 0
    assert 0 <= m["val/coverage95_teff"] <= 1 and m["val/mean_std_teff"] > 0
    client = mlflow.MlflowClient()
    for name in ("train/nll", "train/kl", "val/nll", "val/kl", "val/loss"):
        assert len(client.get_metric_history(run.info.run_id, name)) >= 2, name
    # 8 views of train and val cached once, reused by the next head
    cache = features_cache_dir() / bb.info.run_id
    files = sorted(p.name for p in cache.glob("*.pt"))
    assert len(files) == 2
    feats = torch.load(cache / files[0], weights_only=True)["features"]
    assert feats.shape[0] == 8 and feats.shape[2] == 32
    mtime = {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    _, run2 = run_job([*HEAD, "target=fe_h", "stage.prior.kind=scale_mixture", "stage.repeats=2",
                       f"stage.backbone.run_id={bb.info.run_id}", f"data.dataset_path={path}"],
                      tmp_path / "head2")
    assert run2.info.status == "FINISHED" and "val/sigma_fe_h" in run2.data.metrics
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")} == mtime
    preds = pd.read_csv(client.download_artifacts(run.info.run_id, "predictions.csv",
                                                  str(tmp_path / "dl")))
    assert (preds["teff_lo"] <= preds["teff_mean"]).all() and (preds["teff_mean"] <= preds["teff_hi"]).all()
    assert (preds["teff_std"] > 0).all()
    # scored out of sample: cross-fitted halves of val (split=paper), against truth where the
    # dataset has it, with the ranking ceiling beside the head's rho
    assert tags["oos_scheme"].startswith("cross-fitted halves of val")
    assert m["oos/n_teff"] == pytest.approx((preds["subset"] == "val").sum())
    for k in ("coverage68", "coverage95", "width95", "nll", "crps", "spearman", "coverage95_lo"):
        assert np.isfinite(m[f"oos/{k}_teff"]), k
    oos = pd.read_csv(client.download_artifacts(run.info.run_id, "head/out_of_sample.csv", str(tmp_path / "dl")))
    assert set(oos["row"]) == set(preds.loc[preds["subset"] == "val", "row"])
    assert (oos["lo95"] <= oos["mean"]).all() and (oos["std"] > 0).all()
    figs = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/head_reliability.png", "figures/head_error_vs_std.png"} <= figs


def test_eq20_and_the_mixture_std():
    from stellarexp.models.two_stage import combine

    h1 = torch.tensor([[4.4, 4.6], [4.6, 4.4]], dtype=torch.float64)  # mean 4.5, var 0.02
    h2 = torch.tensor([[2.0, 3.0], [3.0, 2.0]], dtype=torch.float64)  # mean 2.5, var 0.5
    p = torch.tensor([0.9, 0.2], dtype=torch.float64)
    hard = combine(p, h1, h2, "hard")
    torch.testing.assert_close(hard["mean"], torch.tensor([4.5, 2.5], dtype=torch.float64))
    torch.testing.assert_close(hard["std"], torch.tensor([0.02, 0.5], dtype=torch.float64).sqrt())
    soft = combine(p, h1, h2, "soft", torch.Generator().manual_seed(0))
    mean = p * 4.5 + (1 - p) * 2.5
    var = p * 0.02 + (1 - p) * 0.5 + p * (1 - p) * 4.0
    torch.testing.assert_close(soft["mean"], mean)
    torch.testing.assert_close(soft["std"], var.sqrt())
    with pytest.raises(ValueError):
        combine(p, h1, h2, "median")


def test_logg_two_stage_runs(home, tmp_path, backbone_data):
    torch.set_num_threads(1)
    path, _ = backbone_data
    data = f"data.dataset_path={path}"
    _, bb = run_job([*TINY, "target=logg", "stage.max_epochs=1", data], tmp_path / "bb")
    _, clf = run_job([*HEAD, "stage=logg_classifier", "target=logg", data], tmp_path / "clf")
    assert clf.info.status == "FINISHED" and 0 <= clf.data.metrics["val/accuracy_logg"] <= 1
    assert clf.data.tags["backbone_run_id"] == bb.info.run_id
    value, heads = run_job([*HEAD, "stage=logg_heads", "target=logg", data], tmp_path / "heads")
    m = heads.data.metrics
    assert heads.data.tags["classifier_run_id"] == clf.info.run_id
    for k in ("sigma_hard", "sigma_soft", "sigma_perfect", "sigma_dwarf", "sigma_giant",
              "accuracy"):
        assert np.isfinite(m[f"val/{k}_logg"]), k
    assert value == pytest.approx(m["val/sigma_hard_logg"]) == m["val/sigma_logg"]
    # the two-stage predictive is the mixture of the two heads weighted by the classifier,
    # scored out of sample like every head
    assert heads.data.tags["oos_scheme"].startswith("cross-fitted halves of val")
    for k in ("coverage95", "width95", "nll", "crps"):
        assert np.isfinite(m[f"oos/{k}_logg"]), k
