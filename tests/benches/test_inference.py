"""``python -m stellarexp.bench inference`` on a tiny configuration: one JSON line whose figures
are consistent with each other (the speed target is the benchmark's business, not a test's)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.train import REPO

pytest.importorskip("torch")


def test_inference_bench_prints_one_consistent_json_line():
    proc = subprocess.run([sys.executable, "-m", "stellarexp.bench", "inference", "--n", "8",
                           "--batch", "4", "--repeat", "1"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["bench"] == "inference" and out["n_samples"] == 8 and out["batch"] == 4
    assert out["ratio"] == pytest.approx(out["full_network_s"] / out["head_only_s"], rel=0.1)
    # 8 full passes cost more than one backbone pass plus 8 head draws
    assert out["full_network_cpu_s"] > out["head_only_cpu_s"]
    assert out["means_agree"] is True and out["max_mean_diff_z"] <= 5
    assert out["meets_target"] == (out["ratio"] >= out["targets"]["ratio"])


def test_inference_help_calls_means_agree_a_sanity_check():
    proc = subprocess.run([sys.executable, "-m", "stellarexp.bench", "inference", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = " ".join(proc.stdout.split())
    assert "means_agree is a sanity check of the timed code, not a measurement" in text
    assert "means_agree and max_mean_diff_z (the sanity check)" in text
    assert "--agree-z" in text and "sanity check means_agree" in text
