"""``python -m stellarexp.bench train`` in a reduced mode (a tiny ConViT, a generated dataset, two
timed steps per path), the plugin listing, and the lazy imports of the benchmark modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("torch")


def _env(tmp_path) -> dict:
    env = {**os.environ, "STELLAREXP_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def test_train_bench_prints_one_json_line(tmp_path):
    args = ["--generate", "--stars", "120", "--steps", "2", "--warmup", "1", "--rounds", "1",
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
    assert out["ratio"] == pytest.approx(out["bare_images_per_s"] / out["loader_images_per_s"],
                                         rel=0.01)
    assert len(out["ratio_per_round"]) == 1 and out["targets"] == {"ratio": 1.2}
    assert not list(tmp_path.glob("stellarexp-bench-train-*"))  # the generated file is removed


def test_bench_modules_import_lightly_and_are_listed(tmp_path):
    code = ("import sys, stellarexp.benches.sweep, stellarexp.benches.train, stellarexp.train; "
            "print([m for m in ('torch', 'mlflow', 'optuna', 'lightning') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"
    proc = subprocess.run([sys.executable, "-m", "stellarexp.bench"], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "names: cutouts, sweep, train" in proc.stdout
