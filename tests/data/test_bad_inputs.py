"""Bad inputs across the platform (files in ``tests/bad_inputs/``): each gives a message naming
the input and what to do, never a traceback; batch work records the bad item and goes on.

The data modules' own cases (corrupt frames, missing columns of one file, ...) live in their
tests; these are the cross-cutting ones, run through the command lines a user types.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.support.paths import BAD_INPUTS
from tests.support.train import isolated_env, make_stars, migrated_db

BAD = BAD_INPUTS


def cli(args: list[str], home: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    """``python -m <args>`` with its own STELLAREXP_HOME; output merged into ``.out``."""
    db = home / "mlruns" / "mlflow.db"
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_db(), db)
    env = {**isolated_env(home), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=home, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    proc.out = proc.stdout + proc.stderr
    return proc


def refused(proc: subprocess.CompletedProcess, *phrases: str) -> str:
    """Assert a clean refusal: non-zero exit, every phrase in the output, no traceback."""
    assert proc.returncode != 0, proc.out[-3000:]
    assert "Traceback" not in proc.out, proc.out[-4000:]
    for phrase in phrases:
        assert phrase in proc.out, f"{phrase!r} not in:\n{proc.out[-3000:]}"
    return proc.out


@pytest.fixture
def survey(tiny_home) -> Path:
    """Root of the tiny simulated survey (frames, cross-match table, allStar file)."""
    return tiny_home / "data" / "synthetic" / "tiny"


def sdss_build(survey: Path, out: Path, *extra: str) -> list[str]:
    return ["stellarexp.data", "build", "data=sdss", f"data.crossmatch={survey / 'crossmatch.csv'}",
            f"data.frame_root={survey}", f"data.dataset_path={out}", "progress=false", *extra]


# ----------------------------------------------------------------------------- wrong units


def test_label_file_with_teff_in_kK(tmp_path, survey):
    out = refused(cli(sdss_build(survey, tmp_path / "x.h5", f"data.labels={BAD / 'labels_teff_kK.csv'}"),
                      tmp_path / "home"),
                  "labels_teff_kK.csv", "'TEFF'", "Teff in kK", "1000 * value")
    assert out.count("error:") == 1
    assert not (tmp_path / "x.h5").exists()


def test_star_table_with_log_teff(tmp_path):
    home = tmp_path / "home"
    proc = cli(["stellarexp.train", "data=table", f"data.path={BAD / 'table_teff_log10.csv'}",
                "target=teff"], home)
    refused(proc, "table_teff_log10.csv", "log10(Teff)", "10**value")
    # the job's MLflow run is FAILED with the same message, not left RUNNING
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED" and "log10(Teff)" in run.data.tags["error"]


# ----------------------------------------------------------------------- other column names


def test_label_file_with_other_column_names(tmp_path, survey):
    refused(cli(sdss_build(survey, tmp_path / "x.h5", f"data.labels={BAD / 'labels_other_columns.csv'}"),
                tmp_path / "home"),
            "labels_other_columns.csv", "missing required column(s) TEFF", "Teff_K",
            "Names are case-insensitive")


def test_star_table_with_other_column_names():
    from stellarexp.config import compose
    from stellarexp.data.dataset import DatasetError
    from stellarexp.data.table import load_stars

    cfg = compose("train", ["data=table", f"data.path={BAD / 'table_other_columns.csv'}"])
    with pytest.raises(DatasetError) as info:
        load_stars(cfg.data)
    message = str(info.value)
    assert "table_other_columns.csv lacks columns" in message and "'psfmag_u'" in message
    assert "data.columns" in message and "'[M/H]'" in message  # what it has, how to map it


# --------------------------------------------------------- run/camcol/field name vs header


def test_frame_whose_header_disagrees_with_its_name_is_rejected_and_the_build_goes_on(tmp_path, survey):
    root = tmp_path / "survey"
    shutil.copytree(survey, root, ignore=shutil.ignore_patterns("fields"))
    frames = sorted((root / "frames").rglob("frame-r-*.fits.bz2"))
    assert len(frames) == 2
    good, bad = frames
    shutil.copyfile(good, bad)  # field 2's r frame now holds field 1's header (CAMCOL 1)
    proc = cli(["stellarexp.data", "build", "data=sdss", f"data.crossmatch={root / 'crossmatch.csv'}",
                f"data.labels={root / 'allStar-synthetic.fits'}", f"data.frame_root={root}",
                f"data.dataset_path={tmp_path / 'x.h5'}", "progress=false"], tmp_path / "home")
    assert proc.returncode == 0, proc.out[-3000:]
    from stellarexp.data.dataset import read_rejects, read_stars

    stars, rejects = read_stars(tmp_path / "x.h5"), read_rejects(tmp_path / "x.h5")
    assert len(stars) and set(stars["camcol"]) == {1}  # the good field's stars are kept
    bad_rows = rejects[rejects["reason"] == "bad_frame"]
    assert len(bad_rows) > 0
    detail = bad_rows["detail"].iloc[0]
    assert bad.name in detail and "CAMCOL keyword 1 disagrees with the file name camcol 2" in detail
    assert "bad_frame" in proc.out  # the summary lists the reject reason


# --------------------------------------------------------------------------- configuration


def test_unknown_config_key(tmp_path):
    out = refused(cli(["stellarexp.train", "stage=baseline", "stage.max_epoch=3"], tmp_path / "home"),
                  "stage.max_epoch", "not in struct")
    assert "+stage.max_epoch" in out  # how to add a key on purpose
    refused(cli(["stellarexp.data", "build", "data=synthetic", "data.sise=tiny"], tmp_path / "home"),
            "error: cannot compose the configuration", "data.sise")


def test_search_space_typo_and_a_sweep_file_that_is_not_yaml(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    for name in ("sweep_typo.yaml", "sweep_bad_yaml.yaml"):
        shutil.copy(BAD / name, studies / name)
    make_stars(60).to_csv(tmp_path / "stars.csv", index=False)
    common = ["stellarexp.train", "-m", "data=table", f"data.path={tmp_path / 'stars.csv'}",
              "target=teff", "model=random_forest", f"hydra.sweeper.studies_dir={studies}"]
    home = tmp_path / "home"
    refused(cli([*common, "sweep=sweep_typo"], home),
            "sweep_typo.yaml", "'model.params.n_estimatorz'", "did you mean 'n_estimators'",
            "++model.params.n_estimatorz")
    refused(cli([*common, "sweep=sweep_bad_yaml"], home),
            "sweep_bad_yaml.yaml is not valid YAML", "line 2", "fix the file")
    assert not (home / "mlruns" / "optuna").exists() or not any((home / "mlruns" / "optuna").iterdir())


def test_a_grid_with_one_bad_item_records_it_and_goes_on(tmp_path):
    """A multirun over two tables, the first in wrong units: its run is FAILED with the reason,
    the second finishes."""
    make_stars(120).to_csv(tmp_path / "good.csv", index=False)
    home = tmp_path / "home"
    proc = cli(["stellarexp.train", "-m", "data=table", "target=teff", "model=random_forest",
                f"data.path={BAD / 'table_teff_log10.csv'},{tmp_path / 'good.csv'}",
                "evaluate.bootstrap=0", "stage.figure=false", "stage.save_models=false",
                "stage.predictions=false", "+model.params.n_estimators=20"], home)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_path = {r.data.params.get("data.path"): r for r in runs}
    assert len(by_path) == 2, proc.out[-3000:]
    bad, good = by_path[str(BAD / "table_teff_log10.csv")], by_path[str(tmp_path / "good.csv")]
    assert bad.info.status == "FAILED" and "log10(Teff)" in bad.data.tags["error"]
    assert good.info.status == "FINISHED" and good.data.metrics["val/sigma_teff"] > 0


# ------------------------------------------------------------------ models that do not exist


def test_backbone_run_id_that_does_not_exist(tmp_path):
    pytest.importorskip("torch")
    from tests.support.images import write_image_dataset

    write_image_dataset(tmp_path / "img.h5", n=40)
    refused(cli(["stellarexp.train", "stage=head", "model=convit", "target=teff",
                 f"data.dataset_path={tmp_path / 'img.h5'}",
                 "stage.backbone.run_id=0123456789abcdef0123456789abcdef"], tmp_path / "home"),
            "stage.backbone.run_id=0123456789abcdef0123456789abcdef: no such MLflow run",
            "leave it null")


def _needs_predict():
    from stellarexp import stages

    if "predict" not in stages.STAGES:
        pytest.skip("stage=predict is not registered")


def test_model_uri_that_does_not_exist(tmp_path, tiny_survey):
    _needs_predict()
    refused(cli(["stellarexp.train", "stage=predict", "model_uri=models:/no-such-model/3",
                 f"input={tiny_survey['dataset']}"], tmp_path / "home"),
            "no-such-model")


# ------------------------------------------------------------- prediction input, missing bands


def test_crossmatch_without_the_z_band(tmp_path, survey):
    """A label-free build (prediction input) from a table that lacks the z-band columns."""
    refused(cli(["stellarexp.data", "build", "data=sdss", f"data.crossmatch={BAD / 'crossmatch_no_z.csv'}",
                 f"data.frame_root={survey}", f"data.dataset_path={tmp_path / 'x.h5'}",
                 "data.labels=null", "progress=false"], tmp_path / "home"),
            "crossmatch_no_z.csv", "missing required column(s)", "psfMag_z", "psfMagErr_z")


def test_predict_input_without_the_z_band(tmp_path, survey, monkeypatch):
    _needs_predict()
    from stellarexp.config import compose
    from stellarexp.data.pipeline import UserInputError
    from stellarexp.stages.predict import prepare_input

    monkeypatch.setenv("STELLAREXP_HOME", str(tmp_path / "home"))
    cfg = compose("train", ["stage=predict", "model_uri=models:/any/1",
                            f"input={BAD / 'crossmatch_no_z.csv'}", f"frame_root={survey}"])
    with pytest.raises(UserInputError) as info:
        prepare_input(cfg)
    assert "crossmatch_no_z.csv" in str(info.value) and "psfMag_z" in str(info.value)


def test_missing_band_frames_reject_their_stars_and_the_build_goes_on(tmp_path, survey):
    """Prediction input whose z frame of one field is missing: its stars are rejected with the
    frame named, the other field's stars are kept."""
    root = tmp_path / "survey"
    shutil.copytree(survey, root, ignore=shutil.ignore_patterns("fields"))
    gone = sorted((root / "frames").rglob("frame-z-*.fits.bz2"))[1]
    gone.unlink()
    proc = cli(["stellarexp.data", "build", "data=sdss", f"data.crossmatch={root / 'crossmatch.csv'}",
                "data.labels=null", f"data.frame_root={root}", f"data.dataset_path={tmp_path / 'x.h5'}",
                "progress=false"], tmp_path / "home")
    assert proc.returncode == 0, proc.out[-3000:]
    assert gone.name in proc.out  # the warning names the missing frame
    from stellarexp.data.dataset import read_rejects, read_stars

    stars, rejects = read_stars(tmp_path / "x.h5"), read_rejects(tmp_path / "x.h5")
    assert len(stars) and 2 not in set(stars["camcol"])
    missing = rejects[rejects["reason"] == "missing_frame"]
    assert len(missing) and missing["detail"].str.contains(gone.name).all()
    assert set(pd.Series(missing["star_id"]).str.len()) != {0}


@pytest.mark.parametrize("values, looks", [
    ([4.85, 5.12, 4.60, 5.70], "Teff in kK"),
    ([3.686, 3.709, 3.663, 3.756], "log10(Teff)"),
    ([4850.0, 5120.0, -9999.0], None),  # Kelvin; the sentinel is ignored
])
def test_teff_units_are_told_apart(values, looks):
    import numpy as np

    from stellarexp.data.units import check_label_units

    if looks is None:
        check_label_units({"teff": np.array(values)}, "f.csv")
        return
    with pytest.raises(ValueError, match=re.escape(looks)):
        check_label_units({"teff": np.array(values)}, "f.csv", {"teff": "TEFF"})


# ----------------------------------------------------------- frames, labels, outputs, ranges


def _rewrite_frame(path: Path, **header) -> None:
    """Rewrite a bz2 frame with header keywords changed (a broken copy of a real-layout frame)."""
    import bz2
    import io

    from astropy.io import fits

    with fits.open(io.BytesIO(bz2.decompress(path.read_bytes()))) as hdul:
        for key, value in header.items():
            hdul[0].header[key] = value
        buf = io.BytesIO()
        hdul.writeto(buf)
    path.write_bytes(bz2.compress(buf.getvalue(), compresslevel=1))


def _copy_survey(survey: Path, tmp_path: Path) -> Path:
    root = tmp_path / "survey"
    shutil.copytree(survey, root, ignore=shutil.ignore_patterns("fields"))
    return root


def _build(root: Path, out: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli(["stellarexp.data", "build", "data=sdss", f"data.crossmatch={root / 'crossmatch.csv'}",
                f"data.labels={root / 'allStar-synthetic.fits'}", f"data.frame_root={root}",
                f"data.dataset_path={out}", "progress=false", *extra], home)


def test_a_frame_with_an_unknown_projection_rejects_its_field_only(tmp_path, survey):
    from stellarexp.data.dataset import read_rejects, read_stars

    root = _copy_survey(survey, tmp_path)
    bad = sorted((root / "frames").rglob("frame-g-*.fits.bz2"))[1]
    _rewrite_frame(bad, CTYPE1="RA---XYZ")
    proc = _build(root, tmp_path / "x.h5", tmp_path / "home")
    assert proc.returncode == 0 and "Traceback" not in proc.out, proc.out[-3000:]
    stars, rejects = read_stars(tmp_path / "x.h5"), read_rejects(tmp_path / "x.h5")
    assert len(stars) and 2 not in set(stars["camcol"])  # the good field's stars are kept
    broken = rejects[rejects["reason"] == "bad_frame"]
    assert len(broken) and broken["detail"].str.contains("WCS cannot be used").all()
    assert broken["detail"].str.contains(bad.name).all()


def test_no_star_survived_lists_the_reasons_and_replacing_a_frame_rebuilds(tmp_path, survey):
    """A one-field build whose r frame belongs to another field: the error names the mismatch and
    the reject counts; putting the right frame back rebuilds (frames are part of the fingerprint)."""
    root = _copy_survey(survey, tmp_path)
    cross = pd.read_csv(root / "crossmatch.csv")
    one = cross[cross["camcol"] == cross["camcol"].max()]
    one.to_csv(root / "crossmatch.csv", index=False)
    right, wrong = (sorted((root / "frames").rglob("frame-r-*.fits.bz2"))[k] for k in (1, 0))
    saved = right.read_bytes()
    shutil.copyfile(wrong, right)
    home, out = tmp_path / "home", tmp_path / "x.h5"
    text = refused(_build(root, out, home), "no star survived", "Rejects:", "bad_frame", "disagrees")
    assert f"{len(one)} x bad_frame" in text or "x bad_frame" in text
    right.write_bytes(saved)
    proc = _build(root, out, home)
    assert proc.returncode == 0, proc.out[-3000:]
    assert "up to date" not in proc.out
    from stellarexp.data.dataset import read_rejects

    assert not (read_rejects(out)["reason"] == "bad_frame").any()


def test_a_few_label_rows_in_kK_are_rejected_not_kept(tmp_path, survey):
    from astropy.table import Table

    from stellarexp.data.dataset import read_rejects, read_stars

    labels = Table.read(survey / "allStar-synthetic.fits").to_pandas()
    good = labels["TEFF"] > 0
    rows = labels.index[good][:10]
    labels.loc[rows, "TEFF"] = labels.loc[rows, "TEFF"] / 1000.0  # 10 rows in kK, the rest in K
    labels.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "x.h5"
    proc = cli(sdss_build(survey, out, f"data.labels={tmp_path / 'labels.csv'}"), tmp_path / "home")
    assert proc.returncode == 0, proc.out[-3000:]
    stars, rejects = read_stars(out), read_rejects(out)
    assert stars["teff"].min() > 2000
    odd = rejects[rejects["reason"] == "implausible_label"]
    assert 0 < len(odd) <= 10 and odd["detail"].str.contains("Teff in kK").all()  # "(or log10(Teff))" at 3.2-4.8


def test_predict_never_overwrites_its_input(tmp_path, survey):
    src = tmp_path / "cross.csv"
    shutil.copyfile(survey / "crossmatch.csv", src)
    before = src.read_bytes()
    refused(cli(["stellarexp.train", "stage=predict", "model_uri=models:/any/1", f"input={src}",
                 f"output={src}", f"frame_root={survey}"], tmp_path / "home"),
            "would overwrite the input", "cross.csv")
    assert src.read_bytes() == before


def test_a_search_range_outside_the_parameters_own_is_refused_before_any_trial(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(BAD / "sweep_negative_trees.yaml", studies)
    make_stars(60).to_csv(tmp_path / "stars.csv", index=False)
    home = tmp_path / "home"
    refused(cli(["stellarexp.train", "-m", "data=table", f"data.path={tmp_path / 'stars.csv'}", "target=teff",
                 "model=random_forest", f"hydra.sweeper.studies_dir={studies}", "sweep=sweep_negative_trees"],
                home),
            "model.params.n_estimators=-10", "must be an integer >= 1", "search space")
    journal = home / "mlruns" / "optuna"
    assert not journal.exists() or not any(journal.iterdir())


@pytest.mark.parametrize(("override", "phrases"), [
    ("stage.lr=-0.001", ("stage.lr=-0.001", "> 0")),
    ("stage.batch_size=0", ("stage.batch_size=0", ">= 1")),
    ("stage.max_epochs=0", ("stage.max_epochs=0", ">= 1")),
    ("target=foo", ("target='foo'", "'teff'")),
])
def test_stage_settings_are_checked_before_the_job(tmp_path, override, phrases):
    home = tmp_path / "home"
    refused(cli(["stellarexp.train", "stage=backbone", "model=convit", override], home), *phrases)
    assert not (home / "data" / "datasets").exists()  # stopped before any work


def test_a_table_too_small_to_split_is_a_message_not_a_traceback(tmp_path):
    make_stars(3).to_csv(tmp_path / "three.csv", index=False)
    refused(cli(["stellarexp.train", "data=table", f"data.path={tmp_path / 'three.csv'}", "target=teff",
                 "model=random_forest"], tmp_path / "home"),
            "validation stars", "non-empty")
