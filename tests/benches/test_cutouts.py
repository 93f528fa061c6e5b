"""``python -m stellarexp.bench cutouts``: both arms' seconds per field at the same stars per
field, an honest ratio, ``meets_target``, and which field (cropped fixture or not) it ran on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stellarexp import sdss
from stellarexp.benches import cutouts
from tests.support.paths import TESTS_DATA

FIXTURE = TESTS_DATA / "sdss_4510_4_30"


def test_verdict_meets_each_target_and_all_of_them():
    out = cutouts.verdict({"cutout_stars_per_s": 25.0, "ratio": 3.1})
    assert out["targets"] == cutouts.TARGETS
    assert out["meets_targets"] == {"cutout_stars_per_s": True, "ratio": False}
    assert out["meets_target"] is False
    ok = cutouts.verdict({"cutout_stars_per_s": 20.0, "ratio": 21.0})
    assert ok["meets_target"] is True and all(ok["meets_targets"].values())


def test_field_facts_say_whether_the_frames_are_cropped():
    full = cutouts.field_facts(Path("/f"), "--field-dir", (sdss.NAXIS2, sdss.NAXIS1))
    assert full["cropped"] is False and full["frame_shape"] == [1489, 2048]
    crop = cutouts.field_facts(FIXTURE, "test fixture (cropped)", (652, 1104))
    assert crop["cropped"] is True and crop["field_dir"] == str(FIXTURE)


def test_default_field_prefers_the_environment_then_the_shared_field(monkeypatch, tmp_path):
    monkeypatch.setenv("STELLAREXP_BENCH_FIELD", str(tmp_path))
    assert cutouts.default_field_dir() == (tmp_path, "$STELLAREXP_BENCH_FIELD")
    monkeypatch.delenv("STELLAREXP_BENCH_FIELD")
    monkeypatch.setattr(cutouts, "SHARED_FIELD", tmp_path / "absent")
    assert cutouts.default_field_dir() == (cutouts.FIXTURE, "test fixture (cropped)")
    monkeypatch.setattr(cutouts, "SHARED_FIELD", tmp_path)
    assert cutouts.default_field_dir()[0] == tmp_path


@pytest.mark.slow  # ~20 s: a subprocess reads the fixture and times both arms
def test_bench_cutouts_gives_both_arms_per_field_on_the_cropped_fixture():
    env = dict(os.environ, STELLAREXP_BENCH_FIELD=str(FIXTURE))
    out = subprocess.run([sys.executable, "-m", "stellarexp.bench", "cutouts", "--repeat", "1",
                          "--stars", "4"], capture_output=True, text=True, env=env, timeout=300,
                         check=True)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["bench"] == "cutouts" and rec["threads"] == 1 and rec["field"] == "4510-4-30"
    assert rec["frame_shape"] == [652, 1104] and rec["cropped"] is True
    assert rec["field_source"] == "$STELLAREXP_BENCH_FIELD" and rec["field_dir"] == str(FIXTURE)
    # both arms handle the same stars: the first 4 of the field's selection
    assert rec["stars_per_field"] == 4 and rec["n_selected"] >= 4
    for arm in ("cutout", "whole_frame"):
        assert rec[f"{arm}_s_per_field"] > 0
        assert rec[f"{arm}_stars_per_s"] == pytest.approx(4 / rec[f"{arm}_s_per_field"], rel=0.02)
    assert rec["ratio"] == pytest.approx(rec["whole_frame_s_per_field"] / rec["cutout_s_per_field"],
                                         rel=0.02)
    assert rec["meets_targets"] == {k: rec[k] >= v for k, v in rec["targets"].items()}
    assert rec["meets_target"] == all(rec["meets_targets"].values())
    assert rec["read_s_per_field"] > 0
