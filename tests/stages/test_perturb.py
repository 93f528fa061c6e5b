"""``stage=perturb`` and the head's recalibration on a tiny backbone and head.

The head run must log ``head/recalibration.json``, the raw and recalibrated coverage and its
figures; the perturb run reads that head, its backbone and its recalibration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.images import HEAD, TINY, artifact_paths, write_image_dataset
from tests.support.train import run_job

torch = pytest.importorskip("torch")

PERTURB = ["stage=perturb", "model=convit", "stage.n_stars=16", "stage.n_samples=10",
           "stage.rotation.examples=2", "stage.attention.examples=2", "trainer.n_jobs=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("perturbdata") / "img.h5"
    return path, write_image_dataset(path, n=96, seed=7)


def test_head_recalibrates_and_perturb_runs_on_it(home, tmp_path, data):
    import mlflow

    from stellarexp.evaluate.calibration import Recalibration

    torch.set_num_threads(1)
    path, _ = data
    ds = f"data.dataset_path={path}"
    _, bb = run_job([*TINY, "target=all", "stage.max_epochs=1", ds], tmp_path / "bb")
    _, head = run_job([*HEAD, "target=all", "stage.recalibration.method=conformal", ds],
                      tmp_path / "head")
    assert head.info.status == "FINISHED" and head.data.tags["recalibration"] == "conformal"
    client = mlflow.MlflowClient()
    files = artifact_paths(client, head.info.run_id)
    assert {"head/recalibration.json", "head/weights.pt", "figures/head_pred_vs_true.png",
            "figures/head_uncertainty_vs_label.png", "figures/head_calibration.png",
            "figures/head_learning_curves.png", "figures/label_plane.png"} <= files
    recal = Recalibration.from_dict(json.loads(Path(client.download_artifacts(
        head.info.run_id, "head/recalibration.json", str(tmp_path / "dl"))).read_text()))
    assert recal.method == "conformal" and recal.targets == ["teff", "logg", "fe_h"]
    m = head.data.metrics
    for t in ("teff", "logg", "fe_h"):
        # conformal on the validation stars themselves: at least nominal there
        assert m[f"val/coverage95_cal_{t}"] >= 0.95 and m[f"val/coverage68_cal_{t}"] >= 0.68
        assert 0 <= m[f"val/coverage95_raw_{t}"] <= 1 and np.isfinite(m[f"val/crps_cal_{t}"])
        assert m[f"recal/scale_{t}"] > 0 and f"val/sigma_dwarf_{t}" in m

    _, pert = run_job([*PERTURB, "target=all", ds], tmp_path / "perturb")
    assert pert.info.status == "FINISHED"
    assert pert.data.tags["head_run_id"] == head.info.run_id
    assert pert.data.tags["backbone_run_id"] == bb.info.run_id
    assert pert.data.tags["recalibration"] == "conformal"
    files = artifact_paths(client, pert.info.run_id)
    assert {"perturb/noise.csv", "perturb/noise_example.csv", "perturb/rotation.csv",
            "perturb/rotation_spearman.csv", "figures/noise_example.png",
            "figures/noise_shift.png", "figures/rotation_teff.png", "figures/rotation_fe_h.png",
            "figures/attention.png"} <= files
    local = Path(client.download_artifacts(pert.info.run_id, "perturb", str(tmp_path / "p")))
    noise = pd.read_csv(local / "noise.csv")
    assert sorted(noise["eps"].unique()) == [0.0, 0.05, 0.1, 0.5]
    assert (noise["n"] == 16).all()
    clean = noise[noise["eps"] == 0]
    assert (clean["shift_mean"] == 0).all() and (clean["abs_shift_mean"] == 0).all()
    shift = noise.groupby(["target", "eps"])["abs_shift_mean"].mean()
    for t in ("teff", "logg", "fe_h"):
        assert 0 < shift[(t, 0.05)] < shift[(t, 0.5)]  # ten times the noise moves it more
    rot = pd.read_csv(local / "rotation.csv")
    assert sorted(rot["angle"].unique()) == list(np.arange(0.0, 360.0, 30.0))
    assert (rot[rot["angle"] == 0]["abs_shift_mean"] == 0).all()
    assert (rot[rot["angle"] == 30]["abs_shift_mean"] > 0).all()
    spear = pd.read_csv(local / "rotation_spearman.csv").set_index("target")
    assert (spear["n_angles"] == 12).all() and spear["pooled"].between(-1, 1).all()
    assert pert.data.metrics["perturb/rotation_spearman_teff"] == pytest.approx(
        spear.loc["teff", "pooled"])


def test_noise_is_eps_times_each_bands_robust_scatter():
    from stellarexp.stages.perturb import add_noise, pixel_scatter

    rng = np.random.default_rng(0)
    sky = np.array([1.0, 2.0, 0.5, 4.0, 3.0])
    images = rng.standard_normal((40, 5, 48, 48)) * sky[None, :, None, None]
    images[:, :, 22:26, 22:26] += 500.0  # a bright star barely moves the robust scatter
    scatter = pixel_scatter(images)
    np.testing.assert_allclose(scatter.mean(0), sky, rtol=0.03)
    x = torch.from_numpy(images)
    noisy = add_noise(x, scatter, 0.5, [1, 2, 3], torch.Generator().manual_seed(1))
    diff = (noisy - x).numpy()
    assert np.all(diff[:, [0, 4]] == 0)  # u and z untouched
    np.testing.assert_allclose(diff[:, [1, 2, 3]].std(axis=(0, 2, 3)), 0.5 * sky[[1, 2, 3]],
                               rtol=0.03)


def test_rotation_by_quarter_turns_is_exact():
    from stellarexp.stages.perturb import rotate

    x = torch.randn(2, 5, 48, 48)
    torch.testing.assert_close(rotate(x, 90.0), torch.rot90(x, 1, dims=(-2, -1)))
    torch.testing.assert_close(rotate(x, 0.0), x)
    # 30 degrees: rotating a centred symmetric blob leaves it (nearly) unchanged
    yy, xx = torch.meshgrid(torch.arange(48.0) - 23.5, torch.arange(48.0) - 23.5, indexing="ij")
    blob = torch.exp(-(xx ** 2 + yy ** 2) / 18.0).expand(1, 5, 48, 48)
    assert float((rotate(blob, 30.0) - blob).abs().max()) < 0.02
