"""``python -m stellarexp.bench sweep``: the statistics on hand-made trial times, and the whole
benchmark in a reduced mode (slow: four sweep processes with their imports)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from stellarexp.benches.sweep_support.inputs import fixed_params
from stellarexp.benches.sweep_support.trial_times import (
    TrialTimes,
    overhead_stats,
    read_times,
    trials_per_minute,
)
from tests.support.paths import REPO


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


def test_cpu_per_trial_from_the_clock_stamps():
    """CPU seconds of the sweeping process per cycle: consecutive stamps at the objectives'
    starts minus the objective's own CPU; the parts from launch-end stamps."""
    trials = _trials([5.0, 0.50, 0.40, 0.60], [4.9, 0.45, 0.38, 0.52])
    times = {"objective": {0: 1.0, 1: 0.10, 2: 0.05, 3: 0.20},
             "objective_cpu": {0: 0.5, 1: 0.02, 2: 0.01, 3: 0.03},
             "cpu_at": {0: 10.0, 1: 10.7, 2: 10.9, 3: 11.21},
             "children_cpu_at": {0: 1.0, 1: 1.0, 2: 1.25, 3: 1.25},
             "compose_cpu": {1: 0.02, 2: 0.01, 3: 0.03}, "job_cpu": {1: 0.12, 2: 0.11, 3: 0.14},
             "task_cpu": {1: 0.08, 2: 0.07, 3: 0.09},
             "launched_cpu_at": {0: 10.6, 1: 10.8, 2: 10.95, 3: 11.3},
             "compose": {1: 0.1, 2: 0.1, 3: 0.1}, "job": {1: 0.3, 2: 0.3, 3: 0.3},
             "task": {1: 0.2, 2: 0.2, 3: 0.2}}
    stats = overhead_stats(trials, times)
    # cycles: 10.7-10.0-0.5, 10.9-10.7-0.02, 11.21-10.9-0.01 = 0.2, 0.18, 0.3
    assert stats["cpu"] == pytest.approx(0.2)
    assert stats["children_cpu"] == pytest.approx(0.0)  # 0, 0.25, 0
    parts = stats["parts_cpu"]
    assert parts["compose"] == pytest.approx(0.02) and parts["hydra_job"] == pytest.approx(0.04)
    assert parts["train_run"] == pytest.approx(0.06)     # 0.08-0.02, 0.07-0.01, 0.09-0.03
    # launch to launch minus compose and job: 0.2-0.14, 0.15-0.12, 0.35-0.17
    assert parts["sweeper_storage"] == pytest.approx(0.06)
    # without the stamps: no CPU figures, the rest unchanged
    plain = {k: v for k, v in times.items() if not k.endswith(("_cpu", "_at"))}
    assert overhead_stats(trials, plain)["cpu"] is None
    assert overhead_stats(trials, plain)["parts_cpu"] == {}


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
                           "--throughput-trials", "12", "--stars", "1500", "--estimators", "80"],
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
    # CPU seconds of the sweeping process, beside the wall clock of a shared machine
    assert 0 < out["overhead_cpu_s_median"] < 30 and out["overhead_children_cpu_s_median"] >= 0
    assert set(out["overhead_parts_cpu_s_median"]) == set(out["overhead_parts_s_median"])
    assert out["trials_per_min_1_worker"] > 0 and out["trials_per_min_2_workers"] > 0
    assert out["ratio_2_vs_1"] == pytest.approx(
        out["trials_per_min_2_workers"] / out["trials_per_min_1_worker"], rel=0.01)
    assert out["workers_with_trials_2w"] == 2 and out["throughput_trials"] == 12
    assert out["targets"] == {"overhead_s_median": 0.3}
    # nothing left behind: the temporary home is removed
    assert not list(tmp_path.glob("stellarexp-bench-sweep-*"))
    assert not (tmp_path / "home").exists()
