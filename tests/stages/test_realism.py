"""``python -m stellarexp.data realism`` on the tiny survey: one MLflow run with the table,
the per-check tables, the figures and the realism metrics; clear errors for bad anchors."""

import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import TESTS_DATA

DATA = TESTS_DATA
# the 28 clean stars of the real field's crop: a small twin (the packaged 2,349 take minutes)
CROP = DATA / "sdss_4510_4_30" / "calibObj-004510-4-0030-crop.fits.gz"
CHECKS = ("dwarf_locus", "colour_transfer", "photometric_errors", "locus_width", "label_noise", "difficulty")


def _store(home) -> str:
    return f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"


def _realism(home, *extra, timeout=600):
    # the store named explicitly: another test of this worker may have exported its own
    env = dict(os.environ, STELLAREXP_HOME=str(home), MLFLOW_TRACKING_URI=_store(home))
    return subprocess.run([sys.executable, "-m", "stellarexp.data", "realism", "data=synthetic",
                           "data.size=tiny", "stage.segue_like.n=1000", *extra],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)


def test_realism_report_is_one_tracked_run(tiny_home, tmp_path):
    import mlflow

    out = _realism(tiny_home, f"stage.calibobj={CROP}")
    assert out.returncode == 0, out.stderr[-3000:]
    for name in CHECKS:
        assert f"| {name} |" in out.stdout
    assert "twin in the anchor's conditions" in out.stdout
    assert "| dwarf_locus | segue-like |" in out.stdout
    mlflow.set_tracking_uri(_store(tiny_home))
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("stellarexp").experiment_id
    run = client.search_runs([exp], "tags.stage = 'realism'", order_by=["attributes.start_time DESC"])[0]
    assert run.info.status == "FINISHED"
    assert "realism/n_failed" in run.data.metrics and "realism/difficulty/survey/value" in run.data.metrics
    assert run.data.tags["data"] == "synthetic-tiny" and run.data.tags["realism.passed"].endswith("judged checks")
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="realism",
                                                     dst_path=str(tmp_path)))
    table = (local / "realism.md").read_text()
    assert all(f"| {name} |" in table for name in CHECKS)
    assert (local / "tables" / "difficulty-synthetic-tiny.csv").is_file()
    figures = {f.path.split("/")[-1] for f in client.list_artifacts(run.info.run_id, "figures")}
    assert {"dwarf_locus.png", "dwarf_locus_segue_like.png", "photometric_errors.png",
            "label_plane_apogee.png", "label_plane_survey.png", "locus_width.png"} <= figures


def test_bad_anchor_file_is_a_clear_error(tiny_home, tmp_path):
    bad = tmp_path / "my-sspp.csv"
    bad.write_text("ug,gr\n1.0,0.4\n")
    out = _realism(tiny_home, f"stage.sspp={bad}", "stage.difficulty=false")
    assert out.returncode == 1
    assert "my-sspp.csv" in out.stderr and "feh" in out.stderr and "Traceback" not in out.stderr


def test_help_lists_the_realism_command():
    out = subprocess.run([sys.executable, "-m", "stellarexp.data", "--help"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and "realism" in out.stdout and "stage.sspp" in out.stdout
