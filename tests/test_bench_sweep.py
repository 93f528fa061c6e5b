"""``python -m stellarexp.bench sweep``: the statistics on hand-made trial times, and the whole
benchmark in a reduced mode (slow: four sweep processes with their imports)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stellarexp.benches.sweep import (
    TrialTimes,
    fixed_params,
    overhead_stats,
    read_times,
    trials_per_minute,
)

REPO = Path(__file__).resolve().parent.parent


def _trials(cycles, inside, worker="1"):
    """Sequential trials: trial i is told ``cycles[i]`` s after trial i-1 and asked
    ``inside[i]`` s before its tell."""
    out, t = [], 100.0
    for i, (cycle, dur) in enumerate(zip(cycles, inside)):
        t += cycle
        out.append(TrialTimes(i, t - dur, t, "COMPLETE", worker))
    return out


def test_overhead_is_the_cycle_minus_the_objective():
    trials = _trials([5.0, 0.50, 0.40, 0.60], [4.9, 0.45, 0.38, 0.52])
    times = {"objective": {0: 1.0, 1: 0.10, 2: 0.05, 3: 0.20},
             "compose": {1: 0.15, 2: 0.12, 3: 0.20}, "job": {1: 0.30, 2: 0.25, 3: 0.35},
             "task": {1: 0.25, 2: 0.20, 3: 0.30}}
    stats = overhead_stats(trials, times)
    assert stats["n"] == 3  # trial 0 is the warm-up
    assert stats["median"] == pytest.approx(0.40)        # 0.50-0.10, 0.40-0.05, 0.60-0.20
    assert stats["max"] == pytest.approx(0.40) and stats["objective"] == pytest.approx(0.10)
    assert stats["in_trial"] == pytest.approx(0.33)      # 0.35, 0.33, 0.32
    assert stats["between"] == pytest.approx(0.05)       # 0.05, 0.02, 0.08
    parts = stats["parts"]
    assert parts["compose"] == pytest.approx(0.15)
    assert parts["hydra_job"] == pytest.approx(0.05)     # job - task: 0.05, 0.05, 0.05
    assert parts["train_run"] == pytest.approx(0.15)     # task - objective: 0.15, 0.15, 0.10
    assert parts["sweeper_storage"] == pytest.approx(0.05)  # cycle - compose - job: .05 .03 .05


def test_overhead_refuses_incomplete_measurements():
    trials = _trials([1.0, 0.5], [0.9, 0.4])
    with pytest.raises(RuntimeError, match="recorded no time"):
        overhead_stats(trials, {"objective": {0: 0.1}})
    failed = [*trials, TrialTimes(2, 200.0, 200.5, "FAIL")]
    with pytest.raises(RuntimeError, match="did not complete"):
        overhead_stats(failed, {"objective": {0: 0.1, 1: 0.1, 2: 0.1}})
    # without the instrumentation there is no breakdown, the overhead is still measured
    assert overhead_stats(trials, {"objective": {1: 0.1}})["parts"] == {}


def test_trials_per_minute_adds_the_workers_steady_rates():
    one = _trials([9.0, 2.0, 2.0, 2.0], [9.0, 2.0, 2.0, 2.0], "a")   # warm-up, then 2 s/trial
    assert trials_per_minute(one) == pytest.approx(30.0)
    other = _trials([8.0, 3.0, 3.0], [8.0, 3.0, 3.0], "b")            # 3 s/trial
    assert trials_per_minute(one + other) == pytest.approx(30.0 + 20.0)
    # a late worker with a single (warm-up) trial opens the window later; it adds no rate
    late = _trials([12.0], [12.0], "c")                                   # done at t = 112
    assert trials_per_minute(one + late) == pytest.approx(60.0 * 2 / (115.0 - 112.0))
    assert math.isnan(trials_per_minute(_trials([8.0], [8.0], "c")))  # nothing after warm-up
    assert math.isnan(trials_per_minute([]))


def test_read_times_and_fixed_params(tmp_path):
    path = tmp_path / "times.txt"
    path.write_text("0 objective 0.5\n1 objective 0.25\n1 compose 0.125\n1 compose 0.125\n")
    assert read_times(path) == {"objective": {0: 0.5, 1: 0.25}, "compose": {1: 0.25}}
    assert read_times(tmp_path / "missing.txt") == {}
    assert "+model.params.n_estimators=77" in fixed_params("random_forest_color", 77)
    assert fixed_params("xgboost_mag", 5)[0] == "+model.params.n_estimators=5"
    assert fixed_params("my_study", 5) == []


@pytest.mark.slow
def test_sweep_bench_prints_one_json_line(tmp_path):
    env = {**os.environ, "STELLAREXP_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "stellarexp.bench", "sweep", "--trials", "3",
                           "--throughput-trials", "6", "--stars", "600", "--estimators", "20"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["bench"] == "sweep" and out["overhead_trials"] == 3
    assert 0 < out["overhead_s_median"] <= out["overhead_s_max"] < 30
    assert 0 <= out["objective_s_median"] < 0.05  # the trivial objective
    assert set(out["overhead_parts_s_median"]) == {"compose", "hydra_job", "train_run",
                                                   "sweeper_storage"}
    assert all(v > 0 for k, v in out["overhead_parts_s_median"].items() if k != "sweeper_storage")
    assert out["trials_per_min_1_worker"] > 0 and out["trials_per_min_2_workers"] > 0
    assert out["ratio_2_vs_1"] == pytest.approx(
        out["trials_per_min_2_workers"] / out["trials_per_min_1_worker"], rel=0.01)
    assert out["workers_with_trials_2w"] == 2 and out["throughput_trials"] == 6
    assert out["targets"] == {"overhead_s_median": 0.3}
    # nothing left behind: the temporary home is removed
    assert not list(tmp_path.glob("stellarexp-bench-sweep-*"))
    assert not (tmp_path / "home").exists()
