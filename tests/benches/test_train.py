"""``python -m stellarexp.bench train`` in a reduced mode (a tiny ConViT, a generated dataset, two
timed steps per path), the plugin listing, and the lazy imports of the benchmark modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.paths import REPO

pytest.importorskip("torch")


def _env(tmp_path) -> dict:
    env = {**os.environ, "STELLAREXP_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def test_train_bench_prints_one_json_line(tmp_path):
    args = ["--generate", "--stars", "120", "--steps", "2", "--warmup", "1", "--rounds", "2",
            "--threads", "1", "model.depth=2", "model.local_up_to_layer=1",
            "model.embed_dim_per_head=8", "stage.batch_size=16"]
    proc = subprocess.run([sys.executable, "-m", "stellarexp.bench", "train", *args], cwd=REPO,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=240,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # Lightning's chatter goes to stderr
    out = json.loads(lines[0])
    assert out["bench"] == "train" and out["arch"] == "cpu" and out["device"] == "cpu"
    # the overrides reached the model and the loader
    assert out["batch_size"] == 16 and out["threads"] == 1 and out["params_m"] < 0.1
    assert out["dataset"] == "generated" and out["dataset_stars"] == 120
    assert 80 <= out["n_train"] <= 110  # folds 0-7 of 120 stars
    assert out["augment"] is True and out["in_memory"] is True and out["num_workers"] == 0
    for key in ("bare_images_per_s", "loader_images_per_s", "loader_only_images_per_s"):
        assert out[key] > 0
    # ratio: the median of the per-round ratios; ratio_pooled: the pooled rates' ratio
    assert len(out["ratio_per_round"]) == 2 and out["targets"] == {"ratio": 1.2}
    assert out["ratio"] == pytest.approx(sum(out["ratio_per_round"]) / 2, abs=0.002)
    assert out["ratio_pooled"] == pytest.approx(
        out["bare_images_per_s"] / out["loader_images_per_s"], rel=0.01)
    assert out["ratio_range"] == [min(out["ratio_per_round"]), max(out["ratio_per_round"])]
    # every timed batch is full and the loader's wait is part of its step
    assert out["settle"] == 0 and out["batches_per_epoch"] == out["n_train"] // 16
    assert out["ratio_cpu"] > 0 and out["ratio_cpu_iqr"][0] <= out["ratio_cpu_iqr"][1]
    assert 0 <= out["loader_wait_ms_per_batch"] <= out["loader_wait_ms_max"]
    assert out["loader_wait_ms_max"] < out["loader_step_ms_median"] * 10
    assert 0 < out["loader_wait_fraction"] < 1 and out["pin_memory"] is False
    assert not list(tmp_path.glob("stellarexp-bench-train-*"))  # the generated file is removed


def test_summarise_cancels_a_linear_drift_and_reports_the_wait():
    from stellarexp.benches.train import summarise

    # The machine slows down steadily: bare rounds B0..B3 take 10, 11, 12, 13 ms per image (wall;
    # the CPU work is the same, 0.4 s per round). Each loader round ran between two bare rounds
    # at the pace halfway between them, plus a stall: each of its 4 batches of 10 images waited
    # 0.01 s for data; its CPU work is 0.1 s per step plus 0.005 s making the batch.
    pace = [0.010, 0.011, 0.012, 0.013]
    mid = [0.0105, 0.0115, 0.0125]
    bare = [(40, 40 * p, 0.4) for p in pace]
    loader = [[(10, 10 * m + 0.01, 0.01, 0.105)] * 4 for m in mid]
    out = summarise(loader, bare, [0.1] * 16)
    # each loader round is compared with the two bare rounds around it: the per-round ratio is
    # the stall alone, whatever the drift
    stall = [(10 * m + 0.01) / (10 * m) for m in mid]
    assert out["ratio_per_round"] == pytest.approx(stall, abs=1e-3)
    naive = [(10 * m + 0.01) / (10 * p) for m, p in zip(mid, pace)]  # vs the round before only
    assert all(n > s + 0.04 for n, s in zip(naive, stall))  # what the bracketing removes
    assert out["ratio"] == pytest.approx(sorted(out["ratio_per_round"])[1])
    assert out["ratio_range"] == [min(out["ratio_per_round"]), max(out["ratio_per_round"])]
    assert out["ratio_cpu"] == pytest.approx(1.05, abs=1e-3)  # CPU seconds ignore the drift
    assert out["loader_wait_ms_per_batch"] == pytest.approx(10.0)
    total = sum(s[1] for r in loader for s in r)
    assert out["loader_wait_fraction"] == pytest.approx(0.12 / total, abs=1e-4)
    assert out["bare_step_ms_median"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="r \\+ 1 bare rounds"):
        summarise(loader, bare[:3], [0.1])


def test_bench_modules_import_lightly_and_are_listed(tmp_path):
    code = ("import sys, stellarexp.benches.sweep, stellarexp.benches.train, stellarexp.train; "
            "print([m for m in ('torch', 'mlflow', 'optuna', 'lightning') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"
    proc = subprocess.run([sys.executable, "-m", "stellarexp.bench"], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    names = proc.stdout.strip().split("names: ")[1].split(", ")
    assert names == sorted(names) and {"cutouts", "sweep", "train"} <= set(names)
