"""``stage=predict`` end to end on the tiny survey: a dataset file and a label-free cross-match
table in, a catalogue (FITS / Parquet) and its rejects out, logged to MLflow; clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.train import run_job

torch = pytest.importorskip("torch")

PRED_COLUMNS = [f"{t}_{k}" for t in ("teff", "logg", "fe_h") for k in ("mean", "std", "lo", "hi")]


def _predict(tiny_package, tmp_path, *args):
    return run_job(["stage=predict", f"model_uri={tiny_package['model_uri']}",
                    "stage.progress_bar=false", "trainer.n_jobs=1", *args], tmp_path / "job")


def test_predict_a_dataset_file_to_fits(pkg_home, tiny_package, tiny_survey, tmp_path):
    import mlflow
    from astropy.table import Table

    from stellarexp.data import dataset as ds

    out = tmp_path / "cat.fits"
    _, run = _predict(tiny_package, tmp_path, f"input={tiny_survey['dataset']}", f"output={out}")
    assert run.info.status == "FINISHED"
    cat = Table.read(out).to_pandas()
    stars, rejects = ds.read_stars(tiny_survey["dataset"]), ds.read_rejects(tiny_survey["dataset"])
    assert len(cat) == len(stars) == run.data.metrics["predict/n_stars"]
    assert set(PRED_COLUMNS + ["star_id", "ra", "dec", "logg_class_prob", "ood", "ood_score",
                               "ood_reasons", "teff_label"]) <= set(cat.columns)
    assert np.isfinite(cat[PRED_COLUMNS].to_numpy(float)).all()
    assert ((cat["teff_lo"] < cat["teff_mean"]) & (cat["teff_mean"] < cat["teff_hi"])).all()
    assert cat["logg_class_prob"].between(0, 1).all()
    rej = Table.read(tmp_path / "cat_rejects.fits").to_pandas()
    assert len(rej) == len(rejects) > 0 and set(rej.columns) == {"star_id", "reason", "detail"}
    assert run.data.metrics["predict/n_rejected"] == len(rejects)
    assert "predict/sigma_teff" in run.data.metrics  # the input carried labels
    logged = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "catalogue")}
    assert logged == {"catalogue/cat.fits", "catalogue/cat_rejects.fits"}
    # named and tagged by the model and the input, not by the config's default data and split
    name, version = tiny_package["model_uri"][len("models:/"):].split("/")
    dataset = Path(tiny_survey["dataset"])
    assert run.info.run_name == f"predict {name} v{version} {dataset.name}"
    tags = run.data.tags
    assert (tags["model_name"], tags["model_version"]) == (name, version)
    assert tags["input_sha256"] == hashlib.sha256(dataset.read_bytes()).hexdigest()
    assert tags["data_fingerprint"] == ds.read_attrs(dataset)["fingerprint"]
    assert "data" not in tags and "split" not in tags
    assert not any(k.startswith(("data.", "split.")) for k in run.data.params)


def test_predict_a_label_free_crossmatch_flags_out_of_distribution(pkg_home, tiny_package, tiny_survey,
                                                            tmp_path):
    root = Path(tiny_survey["summary"]["root"])
    cross = pd.read_csv(root / "crossmatch.csv")
    odd = cross.index[(cross[[f"flags_{b}" for b in "ugriz"]] == 0).all(axis=1)][0]
    cross.loc[odd, "psfMag_u"] += 6.0  # a u-g colour far beyond anything in training
    table = tmp_path / "crossmatch.csv"
    cross.drop(columns=["teff"]).to_csv(table, index=False)
    out = tmp_path / "cat.parquet"
    _, run = _predict(tiny_package, tmp_path, f"input={table}", f"frame_root={root}",
                      f"output={out}")
    assert run.info.status == "FINISHED"
    cat = pd.read_parquet(out)
    rej = pd.read_parquet(tmp_path / "cat_rejects.parquet")
    assert len(cat) > 0 and len(cat) + len(rej) >= len(cross) - cross["objID"].duplicated().sum()
    assert not any(c.endswith("_label") for c in cat.columns)  # label-free: no label columns
    assert rej["reason"].str.len().gt(0).all()
    row = cat[cat["obj_id"] == cross.loc[odd, "objID"]]
    if len(row):  # (the star may have failed a cutout check: then it is listed as a reject)
        assert bool(row["ood"].iloc[0]) and "u-g>max" in row["ood_reasons"].iloc[0]
        assert row["ood_score"].iloc[0] > 1.0  # far from every training star's colours
    else:
        assert str(cross.loc[odd, "objID"]) in set(rej["star_id"].astype(str))
    flagged = cat["ood"].to_numpy(bool)
    assert (cat["ood_reasons"].fillna("").str.len().gt(0).to_numpy() == flagged).all()
    assert run.data.metrics["predict/n_ood"] == flagged.sum()
    assert np.isfinite(cat["ood_score"]).all()  # a table with photometry: every star scored


def test_clear_errors_for_a_missing_model_and_a_missing_band(pkg_home, tiny_package, tiny_survey,
                                                             tmp_path):
    from stellarexp.data.pipeline import UserInputError

    with pytest.raises(UserInputError, match="no-such-model"):
        run_job(["stage=predict", "model_uri=models:/no-such-model/3",
                 f"input={tiny_survey['dataset']}"], tmp_path / "a")
    root = Path(tiny_survey["summary"]["root"])
    table = tmp_path / "no_u.csv"
    pd.read_csv(root / "crossmatch.csv").drop(columns=["psfMag_u"]).to_csv(table, index=False)
    with pytest.raises(UserInputError, match="psfMag_u"):
        _predict(tiny_package, tmp_path, f"input={table}", f"frame_root={root}")
    with pytest.raises(UserInputError, match="unknown catalogue type"):
        _predict(tiny_package, tmp_path, f"input={tiny_survey['dataset']}", "output=x.xlsx")


def test_model_identity_of_each_uri_form(pkg_home, tiny_package):
    from mlflow.tracking import MlflowClient

    from stellarexp.stages.predict import model_identity

    name = tiny_package["model_uri"][len("models:/"):].split("/")[0]
    MlflowClient().set_registered_model_alias(name, "champion", "1")
    assert model_identity(f"models:/{name}/1") == (name, "1")
    assert model_identity(f"models:/{name}@champion") == (name, "1")
    assert model_identity(f"models:/{name}@nobody") == (name, "@nobody")
    assert model_identity("runs:/0123456789abcdef/model") == ("run 01234567", "")
    assert model_identity("/data/models/convit-quick") == ("convit-quick", "")
