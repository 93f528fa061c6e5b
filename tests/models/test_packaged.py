"""The packaged pyfunc model: assembly from MLflow runs, registration, a fresh-process round trip,
recalibrated intervals and the out-of-range flag."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.support.train import isolated_env

torch = pytest.importorskip("torch")


def test_package_run_links_every_part_and_registers(pkg_home, tiny_package):
    import mlflow

    run, runs = tiny_package["run"], tiny_package["runs"]
    tags = run.data.tags
    assert tags["stage"] == "package" and tags["registered_version"] == "1"
    for stage in ("backbone", "head"):
        assert tags[f"{stage}_run_id"] == runs[stage].info.run_id
    assert tags["classifier_run_id"] == runs["logg_classifier"].info.run_id
    assert tags["logg_heads_run_id"] == runs["logg_heads"].info.run_id
    assert tags["logg_mode"] in ("head", "two_stage")
    client = mlflow.MlflowClient()
    version = client.get_model_version("tiny-convit", "1")
    assert version.run_id == run.info.run_id
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert run.data.metrics["package/n_parts"] == 4 and run.data.metrics["package/check_stars"] > 0
    assert not any(p.startswith("error") for p in files)


def test_registered_model_round_trips_in_a_fresh_process(pkg_home, tiny_package, tmp_path):
    from stellarexp.models import packaged
    from stellarexp.tracking.store import default_uri

    rng = np.random.default_rng(0)
    images = (rng.normal(0, 0.05, (5, 5, 48, 48)) + 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    code = (
        "import sys, json, numpy as np, mlflow\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "m = mlflow.pyfunc.load_model(sys.argv[2])\n"
        "out = m.predict(np.load(sys.argv[3]), params={'n_samples': 25, 'seed': 7})\n"
        "out.to_json(sys.argv[4], orient='split')\n")
    env = isolated_env(pkg_home)
    proc = subprocess.run([sys.executable, "-c", code, default_uri(), tiny_package["model_uri"],
                           str(tmp_path / "x.npy"), str(tmp_path / "out.json")], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = pd.read_json(tmp_path / "out.json", orient="split")
    assert len(fresh) == 5
    for t in ("teff", "logg", "fe_h"):
        lo, m, hi = (fresh[f"{t}_{k}"].to_numpy() for k in ("lo", "mean", "hi"))
        assert np.isfinite(m).all() and (lo < m).all() and (m < hi).all()
        assert (fresh[f"{t}_std"] > 0).all()
    assert fresh["logg_class_prob"].between(0, 1).all() and fresh["logg_prob_above"].between(0, 1).all()
    # the same draws in this process: the package reproduces itself exactly
    here = packaged.load(tiny_package["model_uri"]).predict(images, n_samples=25, seed=7)
    np.testing.assert_allclose(fresh["teff_mean"].to_numpy(), here["teff_mean"].to_numpy(),
                               rtol=1e-6)
    other = packaged.load(tiny_package["model_uri"]).predict(images, n_samples=25, seed=8)
    assert not np.allclose(other["teff_std"], here["teff_std"])


def test_recalibration_scales_std_and_interval(pkg_home, tiny_package):
    from stellarexp.evaluate.calibration import Recalibration, z_value
    from stellarexp.models import packaged

    pred = packaged.load(tiny_package["model_uri"])
    pred.logg_mode = "head"
    images = np.random.default_rng(1).normal(0.3, 0.05, (4, 5, 48, 48)).astype(np.float32)
    pred.recalibration = None
    raw = pred.predict(images, n_samples=30, seed=3)
    pred.recalibration = Recalibration(targets=["fe_h", "teff", "logg"], method="variance",
                                       scale=np.array([3.0, 2.0, 0.5]))
    cal = pred.predict(images, n_samples=30, seed=3)
    for t, s in (("teff", 2.0), ("logg", 0.5), ("fe_h", 3.0)):
        np.testing.assert_allclose(cal[f"{t}_mean"], raw[f"{t}_mean"])
        np.testing.assert_allclose(cal[f"{t}_std"], s * raw[f"{t}_std"], rtol=1e-9)
        half = z_value(0.95) * cal[f"{t}_std"]
        np.testing.assert_allclose(cal[f"{t}_hi"], cal[f"{t}_mean"] + half, rtol=1e-9)
        np.testing.assert_allclose(cal[f"{t}_lo"], cal[f"{t}_mean"] - half, rtol=1e-9)


def test_out_of_range_flags_predictions_and_colours():
    from stellarexp.models.training_ranges import ood, training_ranges

    stars = pd.DataFrame({"teff": [4000.0, 5000.0, np.nan], "logg": [1.0, 4.0, 2.0]})
    for i, b in enumerate("ugriz"):
        stars[f"psfmag_{b}"] = [18.0 - 0.5 * i, 17.0 - 0.4 * i, 16.0 - 0.45 * i]
        stars[f"extinction_{b}"] = 0.0
    ranges = training_ranges(stars, ["teff", "logg"])
    assert ranges["labels"]["teff"] == [4000.0, 5000.0]
    assert ranges["colours"]["u-g"] == pytest.approx([0.4, 0.5])
    assert ranges["magnitudes"]["r"] == [15.1, 17.0]
    assert "colour_space" not in ranges  # too few stars for a density
    colours = pd.DataFrame({"u-g": [0.45, 0.9], "g-r": [0.45, 0.45], "mag_r": [16.0, 19.5]})
    flag, score, reasons = ood({"teff": np.array([4500.0, 3000.0]),
                                "logg": np.array([2.0, 2.0])}, ranges, colours)
    assert flag.tolist() == [False, True]
    assert reasons == ["", "teff<min; u-g>max; r>max"]
    assert np.isnan(score).all()


def test_colour_range_allows_for_the_stars_own_measurement_error():
    """Just beyond the bluest training u-g by less than twice its error: inside; the same offset
    measured more precisely, or a star far beyond: flagged. Errors come from psfmagerr."""
    from stellarexp.models.training_ranges import RANGE_TOLERANCE_SIGMA, ood, star_colours

    ranges = {"labels": {}, "colours": {"u-g": [1.05, 3.0]}}
    stars = pd.DataFrame({f"psfmag_{b}": [17.0] * 3 for b in "griz"})
    stars["psfmag_u"] = 17.0 + np.array([1.03, 1.03, 0.94])  # 0.02, 0.02 and 0.11 bluer
    for b in "ugriz":
        stars[f"extinction_{b}"] = 0.0
        stars[f"psfmagerr_{b}"] = 0.0
    stars["psfmagerr_u"] = [0.03, 0.005, 0.03]
    cols = star_colours(stars)
    assert cols["err_u-g"].tolist() == pytest.approx([0.03, 0.005, 0.03])
    assert RANGE_TOLERANCE_SIGMA * 0.005 < 0.02 < RANGE_TOLERANCE_SIGMA * 0.03 < 0.11
    flag, _, reasons = ood({"teff": np.zeros(3)}, ranges, cols)
    assert flag.tolist() == [False, True, True]
    assert reasons[1] == reasons[2] == "u-g<min"


def _locus_stars(n: int, seed: int) -> pd.DataFrame:
    """Stars along a one-parameter colour locus (``t`` = g-r), r 14-17."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.3, 1.2, n)
    r = rng.uniform(14.0, 17.0, n)
    gr, ug = t, 1.0 + 1.5 * (t - 0.3)
    ri, iz = 0.4 * t, 0.2 * t
    mags = {"r": r, "g": r + gr, "u": r + gr + ug, "i": r - ri, "z": r - ri - iz}
    out = pd.DataFrame({"teff": 6500.0 - 2000.0 * t})
    for b in "ugriz":
        out[f"psfmag_{b}"] = mags[b] + rng.normal(0.0, 0.02, n)
        out[f"extinction_{b}"] = 0.0
    return out


def test_colour_density_flags_stars_off_the_training_locus():
    """Each colour inside its range but the combination where no training star lies: flagged;
    a new star drawn like the training stars: about 1% above the threshold."""
    from stellarexp.models.training_ranges import ood, star_colours, training_ranges

    ranges = training_ranges(_locus_stars(2000, 0), ["teff"])
    space = ranges["colour_space"]
    assert space["k"] == 10 and space["threshold"] > 0 and len(space["points"]) == 2000
    fresh = _locus_stars(2000, 1)
    _, score, _ = ood({"teff": fresh["teff"].to_numpy()}, ranges, star_colours(fresh))
    assert 0.0 < np.mean(score > 1.0) < 0.04
    odd = _locus_stars(1, 2)
    odd["psfmag_g"] = odd["psfmag_r"] + 0.35  # a blue star (g-r 0.35: u-g 1.08 on the locus) ...
    odd["psfmag_u"] = odd["psfmag_g"] + 2.2  # ... with the u-g of the reddest ones
    cols = star_colours(odd)
    assert ranges["colours"]["u-g"][0] < cols["u-g"][0] < ranges["colours"]["u-g"][1]
    assert ranges["colours"]["g-r"][0] < cols["g-r"][0] < ranges["colours"]["g-r"][1]
    flag, score, reasons = ood({"teff": np.array([5000.0])}, ranges, cols)
    assert flag[0] and score[0] > 1.0 and "colour density" in reasons[0]


def test_bad_inputs_give_clear_errors(pkg_home, tiny_package):
    from stellarexp.models import package_format, packaged

    pred = packaged.load(tiny_package["model_uri"])
    with pytest.raises(package_format.PackageError, match="a band is missing"):
        pred.predict(np.zeros((2, 4, 48, 48), np.float32))
    with pytest.raises(package_format.PackageError, match="cannot load the model"):
        packaged.load("models:/no-such-model/1")
    info = pred.info  # package.json, read when loaded (a downloaded copy is not kept)
    assert set(info["runs"]) == {"head", "backbone", "classifier", "logg_heads"}
    assert info["ranges"]["labels"]["teff"][0] < info["ranges"]["labels"]["teff"][1]


class _Planted:
    """Unpickling this creates a folder: what an attacker's ``os.system`` would do, harmlessly."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.makedirs, (self.marker,)


def _tampered_copy(tiny_package, tmp_path):
    """A downloaded copy of the registered model with a malicious pickle and a code file planted."""
    import pickle
    from pathlib import Path

    import mlflow
    import yaml

    copy = Path(mlflow.artifacts.download_artifacts(artifact_uri=tiny_package["model_uri"],
                                                    dst_path=str(tmp_path / "copy")))
    markers = {"pickle": tmp_path / "pickle-ran", "code": tmp_path / "code-ran"}
    (copy / "python_model.pkl").write_bytes(pickle.dumps(_Planted(markers["pickle"])))
    (copy / "code").mkdir(exist_ok=True)
    (copy / "code" / "stellar_model.py").write_text(f"import os\nos.makedirs({str(markers['code'])!r})\n")
    spec = yaml.safe_load((copy / "MLmodel").read_text())
    spec["flavors"]["python_function"]["code"] = "code"
    (copy / "MLmodel").write_text(yaml.safe_dump(spec))
    return copy, markers


def test_a_tampered_model_copy_runs_no_code(pkg_home, tiny_package, tiny_survey, tmp_path):
    from stellarexp.models import packaged
    from tests.support.train import run_job

    copy, markers = _tampered_copy(tiny_package, tmp_path)
    rng = np.random.default_rng(1)
    images = (rng.normal(0, 0.05, (3, 5, 48, 48)) + 0.5).astype(np.float32)
    out = packaged.load(str(copy)).predict(images, n_samples=10, seed=1)
    assert np.isfinite(out["teff_mean"]).all()
    _, run = run_job(["stage=predict", f"model_uri={copy}", f"input={tiny_survey['dataset']}",
                      f"output={tmp_path / 'cat.parquet'}", "stage.progress_bar=false", "trainer.n_jobs=1"],
                     tmp_path / "job")
    assert run.info.status == "FINISHED" and (tmp_path / "cat.parquet").is_file()
    assert not markers["pickle"].exists() and not markers["code"].exists()
    # mlflow's own loader unpickles python_model.pkl: for stores you trust only (docs/prediction.md)
    code = "import sys, mlflow\ntry:\n    mlflow.pyfunc.load_model(sys.argv[1])\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code, str(copy)], env=isolated_env(pkg_home), capture_output=True,
                   timeout=300, check=False)
    assert markers["pickle"].exists()


def test_a_package_path_leading_out_of_the_model_is_refused(pkg_home, tiny_package, tmp_path):
    import yaml

    from stellarexp.models import package_format, packaged

    copy, _ = _tampered_copy(tiny_package, tmp_path)
    spec = yaml.safe_load((copy / "MLmodel").read_text())
    spec["flavors"]["python_function"]["artifacts"]["package"]["path"] = "../../"
    (copy / "MLmodel").write_text(yaml.safe_dump(spec))
    with pytest.raises(package_format.PackageError, match="outside the model directory"):
        packaged.load(str(copy))
    (copy / "MLmodel").unlink()
    with pytest.raises(package_format.PackageError, match="no MLmodel"):
        packaged.load(str(copy))


def test_loading_a_registered_model_writes_nothing_into_the_store(pkg_home, tiny_package):
    """Prediction reads the stored model; it never adds or rewrites a file of it (MLflow's own
    loader writes ``registered_model_meta`` beside a local model)."""
    from pathlib import Path

    from stellarexp.models import packaged

    artifacts = Path(pkg_home) / "mlruns" / "artifacts"

    def snapshot():
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in artifacts.rglob("*") if p.is_file()}

    before = snapshot()
    assert before
    packaged.load(tiny_package["model_uri"])
    assert snapshot() == before
