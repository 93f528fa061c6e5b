"""``python -m stellarexp.bench predict``: frames to catalogue per step, on a real field (the
cropped fixture) and a synthetic field (the tiny survey), one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stellarexp import bench
from tests.support.paths import TESTS_DATA

FIXTURE = TESTS_DATA / "sdss_4510_4_30"
STEPS = ("read", "cutouts", "model", "write")


def test_help_names_the_steps_and_the_keys(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["predict", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in (*STEPS, "stars_per_s_per_core", "--model-uri", "--synthetic-root", "untrained"):
        assert word in text
    assert "predict" in bench.available()


@pytest.mark.slow  # ~30 s: a subprocess imports torch, reads both fields' frames, cuts and predicts
def test_bench_predict_times_each_step_on_a_real_and_a_synthetic_field(tiny_survey):
    root = Path(tiny_survey["summary"]["root"])
    out = subprocess.run([sys.executable, "-m", "stellarexp.bench", "predict", "--field-dir",
                          str(FIXTURE), "--synthetic-root", str(root), "--stars", "4",
                          "--n-samples", "5"], capture_output=True, text=True, timeout=600,
                         check=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["bench"] == "predict" and rec["threads"] == 1 and rec["model"] == "untrained cpu"
    real, syn = rec["real"], rec["synthetic"]
    assert real["field"] == "4510-4-30" and real["cropped"] is True
    assert syn["source"] == str(root) and syn["cropped"] is False
    for part in (real, syn):
        assert part["n_input"] == 4 and 0 < part["n_accepted"] <= part["n_selected"] <= 4
        assert all(part[f"{s}_s"] > 0 for s in STEPS)
        assert sum(part[f"{s}_s"] for s in STEPS) == pytest.approx(part["total_s"], abs=0.01)
        assert part["stars_per_s_per_core"] == pytest.approx(
            part["n_accepted"] / part["total_s"], rel=0.01)
    assert rec["stars_per_s_per_core"] == {"real": real["stars_per_s_per_core"],
                                           "synthetic": syn["stars_per_s_per_core"]}
