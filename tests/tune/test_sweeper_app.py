"""The sweeper end to end on a toy Hydra app, run as ``python app.py -m ...`` subprocesses.

The toy task returns ``(x - 2)^2 (+ 0.1 y)``; its ``mode`` makes some trials return NaN or raise,
and ``TOY_HANG_AT=<trial>`` makes that trial hang so the test can kill its sweeper. Each test
has its own STELLAREXP_HOME (so its own default journal) under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tests.support.paths import REPO
from tests.support.sweep_lines import check_quiet, check_sequential, trial_lines

APP = '''
import os, time
import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg):
    with open(os.environ["TOY_CALLS"], "a") as fh:  # one line per job: its overrides
        fh.write(" ".join(HydraConfig.get().overrides.task) + "\\n")
    hang = os.environ.get("TOY_HANG_AT")
    if hang is not None and HydraConfig.get().sweeper.get("trial_number") == int(hang):
        open(os.environ["TOY_MARKER"], "w").close()
        time.sleep(120)
    if cfg.mode == "mixed" and cfg.x == 3:  # a stage that prunes itself through the study
        import optuna
        from stellarexp.tune.in_job import current_trial

        current_trial().report(42.0, step=0)
        raise optuna.TrialPruned()
    if cfg.mode == "mixed" and cfg.x == 4:
        return float("nan")
    if cfg.mode == "mixed" and cfg.x >= 5:
        raise RuntimeError("toy failure")
    if cfg.mode == "allnanval":
        return float("nan")
    time.sleep(float(cfg.sleep))
    return (cfg.x - 2) ** 2 + (0 if cfg.y is None else 0.1 * float(cfg.y))


if __name__ == "__main__":
    main()
'''

CONFIG = '''
defaults:
  - override hydra/sweeper: stellarexp
  - _self_
x: 0.0
y: null
mode: ok
sleep: 0
sweep: null
target: teff
stage: {name: toy}
hydra:
  sweeper:
    studies_dir: ${oc.env:TOY_STUDIES}
  sweep:
    dir: ${oc.env:TOY_OUT}/multirun/${now:%H-%M-%S-%f}
  run:
    dir: ${oc.env:TOY_OUT}/run
'''

STUDY = '''
description: toy study
n_trials: 4
seed: 1
params:
  x: interval(-5, 5)
  y: choice(1, 2, 3)
'''


class Toy:
    """A toy app in a temporary folder, run with its own STELLAREXP_HOME."""

    def __init__(self, root: Path):
        self.root = root
        (root / "conf").mkdir()
        (root / "studies").mkdir()
        (root / "app.py").write_text(APP)
        (root / "conf" / "config.yaml").write_text(CONFIG)
        (root / "studies" / "toy.yaml").write_text(STUDY)
        (root / "studies" / "defaults.yaml").write_text(
            "select: stage.name\nstudies:\n  toy: toy\n")
        self.env = {**os.environ, "STELLAREXP_HOME": str(root / "home"),
                    "TOY_STUDIES": str(root / "studies"), "TOY_OUT": str(root / "out"),
                    "TOY_CALLS": str(root / "calls.txt"), "HYDRA_FULL_ERROR": "0"}
        self.env.pop("MLFLOW_TRACKING_URI", None)

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, str(self.root / "app.py"), *args]

    def run(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.cmd(*args), cwd=self.root, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=120, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def calls(self) -> list[str]:
        path = self.root / "calls.txt"
        return path.read_text().splitlines() if path.exists() else []

    def storage(self):
        path = self.root / "home" / "mlruns" / "optuna" / "journal.log"
        return JournalStorage(JournalFileBackend(str(path)))

    def studies(self) -> dict:
        return {s.study_name: s for s in optuna.get_all_study_summaries(self.storage())}

    def trials(self, name: str):
        return optuna.load_study(study_name=name, storage=self.storage()).get_trials()


@pytest.fixture
def toy(tmp_path):
    return Toy(tmp_path)


def states(trials) -> dict:
    out: dict = {}
    for t in trials:
        out[t.state] = out.get(t.state, 0) + 1
    return out


# ------------------------------------------------------------------------------------ tests


def test_study_file_sweep_exports_best(toy):
    proc = toy.run("-m", "sweep=toy")
    trials = toy.trials("toy-teff")
    assert states(trials) == {TrialState.COMPLETE: 4}
    assert {"x", "y"} == set(trials[0].params) and -5 <= trials[0].params["x"] <= 5
    result = yaml.safe_load((toy.root / "home" / "sweeps" / "results" / "toy-teff.yaml").read_text())
    best = min(trials, key=lambda t: t.value)
    assert result["best_value"] == pytest.approx(best.value)
    assert result["params"] == best.params and result["best_trial"] == best.number
    assert result["command"].startswith("python ") and "sweep=toy" in result["command"]
    assert f"x={best.params['x']!r}" in result["command"]
    assert "best parameters:" in proc.stdout and result["command"] in proc.stdout
    # each job got the trial's values, as Hydra overrides
    assert len(toy.calls()) == 4 and all(c.startswith("sweep=toy x=") for c in toy.calls())


def test_jobs_see_the_same_config_and_runtime_as_with_full_composition(toy):
    """The sweeper's cached composition (default) against Hydra's full one for every job: the
    same job config, task overrides and Hydra node (``.hydra/`` files of each job)."""
    differ = ("hydra.sweep.dir", "hydra.sweeper.study_name", "hydra.sweeper.reuse_composition")

    def jobs(name: str, *extra: str) -> list[tuple]:
        toy.run("-m", "sweep=toy", "hydra.sweeper.n_trials=3", f"hydra.sweeper.study_name={name}",
                f"hydra.sweep.dir={toy.root / 'out' / name}", *extra)
        out = []
        for job in sorted((toy.root / "out" / name).glob("*/.hydra")):
            hydra = yaml.safe_load((job / "hydra.yaml").read_text())["hydra"]
            assert hydra["runtime"]["output_dir"] == str(job.parent)
            hydra["runtime"]["output_dir"] = None
            hydra["overrides"]["hydra"] = [o for o in hydra["overrides"]["hydra"]
                                           if not o.startswith(differ)]
            for key in differ:
                group, field = key.split(".")[1:]
                hydra[group].pop(field, None)
            out.append(((job / "config.yaml").read_text(), (job / "overrides.yaml").read_text(),
                        hydra))
        return out

    cached = jobs("cached")
    full = jobs("full", "hydra.sweeper.reuse_composition=false")
    assert len(cached) == 3 and cached == full
    assert "x=" in cached[1][1] and cached[1][2]["job"]["num"] == 1


def test_comma_lists_and_range_are_a_grid(toy):
    toy.run("-m", "x=1,2", "y=range(2)")
    assert sorted(toy.calls()) == ["x=1 y=0", "x=1 y=1", "x=2 y=0", "x=2 y=1"]
    assert not (toy.root / "home" / "mlruns" / "optuna").exists()  # no study involved


def test_no_selection_runs_the_default_study(toy):
    toy.run("-m", "hydra.sweeper.n_trials=2")
    assert list(toy.studies()) == ["toy-teff"] and len(toy.trials("toy-teff")) == 2


def test_command_line_grammar_and_grid_sampler(toy):
    # range() and a comma list on the command line become Optuna parameters under mode=optuna;
    # sampler=grid then visits every point once and n_trials defaults to the grid's size
    toy.run("-m", "x=range(0, 3)", "y=5,6", "hydra.sweeper.sampler=grid", "hydra.sweeper.mode=optuna")
    (name,) = toy.studies()
    trials = toy.trials(name)
    assert {(t.params["x"], t.params["y"]) for t in trials} == {(x, y) for x in range(3) for y in (5, 6)}
    assert len(trials) == 6 and all(isinstance(t.params["x"], int) for t in trials)


def test_resume_counts_the_total(toy):
    toy.run("-m", "sweep=toy", "hydra.sweeper.n_trials=3")
    toy.run("-m", "sweep=toy", "hydra.sweeper.n_trials=5")
    assert states(toy.trials("toy-teff")) == {TrialState.COMPLETE: 5}
    toy.run("-m", "sweep=toy", "hydra.sweeper.n_trials=5")  # nothing left to do
    assert len(toy.trials("toy-teff")) == 5 and len(toy.calls()) == 5


def test_killed_sweep_resumes_to_exactly_n_trials(toy):
    marker = toy.root / "hang"
    env = {**toy.env, "TOY_HANG_AT": "2", "TOY_MARKER": str(marker)}
    proc = subprocess.Popen(toy.cmd("-m", "sweep=toy", "hydra.sweeper.n_trials=5"), cwd=toy.root,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "trial 2 never started"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert states(toy.trials("toy-teff")) == {TrialState.COMPLETE: 2, TrialState.RUNNING: 1}
    proc = toy.run("-m", "sweep=toy", "hydra.sweeper.n_trials=5")
    trials = toy.trials("toy-teff")
    # the killed trial stays FAIL with its cause, and is run again first, with its own params:
    # 5 trials count (the killed one does not), 6 exist
    assert states(trials) == {TrialState.COMPLETE: 5, TrialState.FAIL: 1}
    assert trials[2].state == TrialState.FAIL and "died" in trials[2].user_attrs["fail_reason"]
    assert trials[2].user_attrs["retried"] is True
    assert trials[3].user_attrs["retry_of"] == 2 and trials[3].params == trials[2].params
    assert trials[3].state == TrialState.COMPLETE
    assert "trial 2 marked FAIL" in proc.stderr + proc.stdout
    toy.run("-m", "sweep=toy", "hydra.sweeper.n_trials=5")  # nothing left to do
    assert len(toy.trials("toy-teff")) == 6
    # the exported counts say which failure was run again, and reproduce counts 5, not 6
    from stellarexp.reproduce.tune import _trials_done

    result = yaml.safe_load((toy.root / "home" / "sweeps" / "results" / "toy-teff.yaml").read_text())
    assert result["trials"]["fail"] == 1 and result["trials"]["retried"] == 1
    assert _trials_done(result) == 5


def test_nan_raising_and_pruned_trials_and_the_sweep_goes_on(toy):
    # mode=mixed: x = 3 reports and prunes itself, x = 4 returns NaN, x >= 5 raises
    proc = toy.run("-m", "x=int(interval(0, 6))", "mode=mixed", "hydra.sweeper.n_trials=12",
                   "hydra.sweeper.sampler=random", "hydra.sweeper.seed=0")
    (name,) = toy.studies()
    trials = toy.trials(name)
    assert len(trials) == 12
    # one line per trial: k/n, value or why pruned/failed, best so far (as the storage has it)
    check_sequential(trial_lines(proc.stdout), trials, 12)
    check_quiet(proc.stdout + proc.stderr)
    assert "Launching 1 jobs locally" not in proc.stdout  # the launcher's per-job lines are off
    reasons = {4: "the job returned nan", 5: "RuntimeError: toy failure", 6: "RuntimeError: toy failure"}
    for t in trials:
        x = t.params["x"]
        expected = TrialState.PRUNED if x == 3 else TrialState.FAIL if x in reasons else TrialState.COMPLETE
        assert t.state == expected, x
        assert t.user_attrs.get("fail_reason") == reasons.get(x)
        if x == 3:
            assert t.intermediate_values == {0: 42.0}
    xs = {t.params["x"] for t in trials}
    assert {3, 4} <= xs and xs & {5, 6} and xs & {0, 1, 2}  # every kind happened (seeded)


def test_consecutive_failures_stop_the_sweep(toy):
    proc = toy.run("-m", "x=interval(0, 1)", "mode=allnanval", "hydra.sweeper.n_trials=10",
                   "hydra.sweeper.max_consecutive_failures=3", check=False)
    assert proc.returncode != 0
    assert "3 trials in a row failed" in proc.stderr
    (name,) = toy.studies()
    assert states(toy.trials(name)) == {TrialState.FAIL: 3}


def test_target_all_is_refused(toy):
    proc = toy.run("-m", "sweep=toy", "target=all", check=False)
    assert proc.returncode != 0
    assert "one target at a time" in proc.stderr and "Traceback" not in proc.stderr
    assert toy.calls() == []


def test_two_workers_share_one_journal(toy):
    args = ("-m", "x=interval(0, 4)", "sleep=0.2", "hydra.sweeper.n_trials=6")
    procs = [subprocess.Popen(toy.cmd(*args), cwd=toy.root, env=toy.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    (name,) = toy.studies()
    trials = toy.trials(name)
    assert states(trials) == {TrialState.COMPLETE: 6} and len(toy.calls()) == 6
    # both workers took part (the lock hands out trials, it does not serialise whole sweeps)
    assert len({t.user_attrs["worker_pid"] for t in trials}) == 2
    # each worker printed the lines of its own trials; k counts the study's finished trials
    lines = [trial_lines(out) for out in outs]
    numbers = [ln["number"] for part in lines for ln in part]
    assert sorted(numbers) == [t.number for t in trials] and all(lines)
    assert sorted(ln["k"] for part in lines for ln in part) == list(range(1, 7))
    for part in lines:
        assert [ln["k"] for ln in part] == sorted(ln["k"] for ln in part)
        assert all(ln["n"] == 6 for ln in part)
    final = min(trials, key=lambda t: t.value)
    last = max((ln for part in lines for ln in part), key=lambda ln: ln["k"])
    assert last["best_trial"] == final.number


def test_quiet_false_keeps_hydra_per_job_lines(toy):
    proc = toy.run("-m", "x=interval(0, 4)", "hydra.sweeper.n_trials=2", "hydra.sweeper.quiet=false")
    assert proc.stdout.count("Launching 1 jobs locally") == 2
    assert len(trial_lines(proc.stdout)) == 2


HELP_PROBE = """
import json, runpy, sys, time
sys.argv = [sys.argv[1], "--help"]
tic = time.perf_counter()
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print(json.dumps({"seconds": time.perf_counter() - tic, "modules": sorted(sys.modules)}))
"""


def test_help_imports_neither_optuna_nor_mlflow(toy):
    proc = subprocess.run([sys.executable, "-c", HELP_PROBE, str(toy.root / "app.py")],
                          cwd=toy.root, env=toy.env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    modules = set(report["modules"])
    assert "hydra_plugins.stellarexp_sweeper.sweeper" in modules  # the plugin was scanned
    assert not {m for m in modules if m.split(".")[0] in ("optuna", "mlflow", "torch")}
    assert report["seconds"] < 10  # about 0.3 s; generous for a loaded machine


def test_stellarexp_train_selects_the_project_sweeper():
    """stellarexp/conf/hydra/sweeper/stellarexp_optuna.yaml composes on the real app's config."""
    from hydra import compose, initialize_config_dir

    from stellarexp.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "stellarexp" / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/sweeper=stellarexp_optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.stellarexp_sweeper.sweeper.StellarexpSweeper"
    assert sweeper.study_key == "sweep" and sweeper.storage is None and sweeper.mode == "auto"
    assert "trainer" in sweeper.identity_ignore


@pytest.mark.parametrize("recorded", [(), ("worker_host",), ("worker_host", "worker_pid")])
def test_a_trial_killed_while_recording_its_worker_is_failed_under_the_lock(tmp_path, recorded):
    """A worker writes host, pid and heartbeat one by one under the ask lock; killed between
    any two of them, its trial is failed by the next worker holding the lock (not counted as
    running forever), and a fully recorded live trial is left alone."""
    import socket

    from stellarexp.tune.liveness import fail_stale_trials
    from stellarexp.tune.storages import open_storage

    storage = open_storage(str(tmp_path / "journal.log"))
    study = optuna.create_study(study_name="s", storage=storage)
    orphan, live = study.ask(), study.ask()
    values = {"worker_host": socket.gethostname(), "worker_pid": os.getpid(),
              "heartbeat": time.time()}
    for key in recorded:
        orphan.set_user_attr(key, values[key])
    for key, value in values.items():
        live.set_user_attr(key, value)
    assert fail_stale_trials(study, storage, grace_period=300, orphans=False) == []
    assert fail_stale_trials(study, storage, grace_period=300, orphans=True) == [orphan.number]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[2].user_attrs["retry_of"] == orphan.number  # run again first, with its params
