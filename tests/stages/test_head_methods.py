"""``stage=head stage.method=...``: every uncertainty method trains on the same frozen backbone,
is one MLflow run named by its method, scored out of sample with the fitting folds' NLL, and
the packaged model carries it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.images import HEAD, TINY, write_image_dataset
from tests.support.train import run_job

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def method_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("methods") / "img.h5"
    return path, write_image_dataset(path, n=480, seed=7)


def test_every_method_is_a_scored_run_on_the_same_backbone(home, tmp_path, method_data):
    import mlflow

    from stellarexp.models.package_predictor import load_head

    torch.set_num_threads(1)
    path, _ = method_data
    _, bb = run_job([*TINY, "target=all", "stage.max_epochs=1", f"data.dataset_path={path}"],
                    tmp_path / "bb")
    client = mlflow.MlflowClient()
    runs = {}
    for method in ("bbb", "mean_variance", "mc_dropout", "ensemble", "conformal"):
        _, r = run_job([*HEAD, "target=all", f"stage.method={method}", "stage.members=3",
                        f"stage.backbone.run_id={bb.info.run_id}", f"data.dataset_path={path}"],
                       tmp_path / method)
        assert r.info.status == "FINISHED", method
        assert r.data.tags["head_method"] == method
        assert r.data.tags["backbone_run_id"] == bb.info.run_id
        runs[method] = r
    for method, r in runs.items():
        m = r.data.metrics
        for t in ("teff", "logg", "fe_h"):
            for k in ("coverage68", "coverage95", "width95", "interval_score95", "crps", "spearman"):
                assert np.isfinite(m[f"oos/{k}_{t}"]), (method, k, t)
        assert m["cost/predict_s_per_1000"] > 0 and m["cost/train_s"] > 0
        if method == "conformal":  # a conformal predictive system, its density kernel-smoothed
            assert r.data.tags["oos_recalibration"] == "crepes"
        # the NLL of each fold's fitting half, what the best method is chosen by: every method
        assert np.isfinite(m["oos/nll_teff"]), method
        assert np.isfinite(m["oos/fit_nll_fold0_teff"]) and np.isfinite(m["oos/fit_nll_fold1_teff"])
        folder = client.download_artifacts(r.info.run_id, "head", str(tmp_path / f"dl_{method}"))
        module, _scaler, meta = load_head(Path(folder))
        assert meta["method"] == method and type(module).__name__ == (
            "HeadModule" if method == "bbb" else "PointHeadModule")
        if method == "conformal":
            cal = json.loads((Path(folder) / "conformal.json").read_text())
            assert cal["library"] == "crepes" and len(cal["targets"]["teff"]["residuals"]) > 0
    # ensembles and MC dropout spread their draws over members or masks; the plain mean-variance
    # head's spread is its noise only, so a star's draws of mu are all one
    feats = torch.randn(5, 32)
    ens = load_head(Path(client.download_artifacts(
        runs["ensemble"].info.run_id, "head", str(tmp_path / "ens"))))[0]
    mu, _ = ens.head.params(feats.expand(3, *feats.shape))
    assert not torch.allclose(mu[0], mu[1])

    # the report: the paper's head alone in Table 2, every method in the methods' table
    _, rep = run_job(["stage=report", f"data.dataset_path={path}"], tmp_path / "report")
    md = Path(client.download_artifacts(rep.info.run_id, "comparison/comparison.md",
                                        str(tmp_path / "rep"))).read_text()
    section = md[md.index("## Uncertainty methods on one backbone"):]
    figure = [f.path for f in client.list_artifacts(rep.info.run_id, "figures")]
    assert "figures/uncertainty_methods.png" in figure and "uncertainty_methods.png)" in section
    for method in runs:
        assert f"| {method} | teff |" in section, method
    assert "Best method by mean NLL" in section or "No single best method" in section
    import pandas as pd

    table2 = pd.read_csv(client.download_artifacts(rep.info.run_id, "comparison/comparison.csv",
                                                   str(tmp_path / "rep2"))).set_index("key")
    assert table2.loc["ours_head", "run_teff"] == runs["bbb"].info.run_id

    # the packaged model carries a non-paper method; the catalogue names it
    from stellarexp.data.dataset import read_images

    images = read_images(path, np.arange(20))
    for method in ("conformal", "ensemble"):
        _, pkg = run_job(["stage=package", f"stage.runs.head={runs[method].info.run_id}",
                          f"stage.model_name=methods-{method}", "stage.n_samples=40",
                          f"data.dataset_path={path}"], tmp_path / f"pkg_{method}")
        assert pkg.info.status == "FINISHED"
        pred = mlflow.pyfunc.load_model(pkg.data.tags["model_uri"]).predict(
            images.astype(np.float32), params={"n_samples": 40})
        assert (pred["uncertainty_method"] == method).all()
        assert (pred["teff_lo"] < pred["teff_mean"]).all() and (pred["teff_mean"] < pred["teff_hi"]).all()
        if method == "conformal":  # the interval is the conformal system's, not mean +- 1.96 std
            half = (pred["teff_hi"] - pred["teff_lo"]) / 2
            assert not np.allclose(half, 1.96 * pred["teff_std"], rtol=0.01)


def test_the_methods_study_searches_every_method():
    from stellarexp.models.heads import HEAD_METHODS
    from stellarexp.tune import search_space, studies

    study = studies.load_study("head_methods")
    space, fixed = search_space.parse_search_space(study.params)
    choices = set(space["stage.method"].distribution.choices)
    assert choices == set(HEAD_METHODS)
    assert study.settings["metric"] == "oos/fit_nll_fold0_teff" and "target=teff" in fixed


def test_the_conformal_cost_counts_its_intervals_and_skips_a_label_without_a_system(monkeypatch):
    from stellarexp.stages import head

    rng = np.random.default_rng(0)
    n = 200
    pred = {"mean": rng.normal(size=(n, 2)), "std": rng.uniform(0.5, 1.5, (n, 2))}
    true = pred["mean"] + rng.normal(size=(n, 2))
    true[1:, 1] = np.nan  # the second label: one labelled star, no conformal system
    timed = []
    real = head.conformal_intervals
    monkeypatch.setattr(head, "conformal_intervals",
                        lambda *a, **k: timed.append(len(a[1])) or real(*a, **k))
    seconds = head.conformal_interval_seconds({"val": (pred, true), "test": (pred, true)},
                                              ["teff", "logg"])
    assert seconds > 0 and timed == [n, n]  # the first label's intervals for both subsets only
