"""``python -m stellarexp.bench sweep``: the cost of an Optuna sweep per trial, and how it scales.

Both measurements run the real entry point (``python -m stellarexp.train -m``: the project's
sweeper, MLflow tracking, an Optuna journal file) as subprocesses in a temporary
``STELLAREXP_HOME``, on a star table generated there (``data=table``). Times come from the Optuna
storage (each trial's ask and tell), so process start-up and imports never count.

1. **Per-trial overhead.** A study of ``--trials`` + 1 trials of a trivial objective: the stage
   ``bench_noop`` (registered for the benchmark's subprocesses only) returns ``(stage.x - 1)^2``
   and times itself. With one worker, a trial's *cycle* is the time from the previous trial's
   tell to its own tell; the overhead is the cycle minus the objective's own time. Trial 0
   (imports, first composition, study and parent-run creation) is the warm-up and is left out.
   The cycle splits into ``in_trial`` (ask to tell: Hydra job set-up, the MLflow child run with
   its tags, params and metrics, the tell) and ``between`` (tell to the next ask: the
   sweeper's lock, liveness check, trial count and the sampler). On a shared machine the wall
   clock mostly measures the other jobs, so the cycle is also given in CPU seconds of the
   sweeping process (stamps of its CPU clock taken by the objective), with its parts.
2. **Parallel throughput.** A shipped, CPU-bound baseline study (``random_forest_color``,
   ``target=teff``) run to ``--throughput-trials`` trials by one worker process, then, in a fresh
   study, by two worker processes started together on one journal; each runs one trial at a time
   (``n_jobs=1``) with one model thread (``trainer.n_jobs=1``, BLAS/OpenMP pools at 1). The
   hyperparameters that drive the cost (number of trees, depth, features per split) are fixed on
   the command line, so every trial costs about the same and the comparison measures the workers
   rather than the sampler's draws. Trials per minute: each worker's completions after its
   first (warm-up) trial over the time from its first completion to its last, summed over the
   workers (:func:`~stellarexp.benches.sweep_support.trial_times.trials_per_minute`).

This module holds the two sides of the run: the instrumented program each sweep subprocess runs
(:func:`app_main`) and the driver that starts them and summarises (:func:`bench_sweep`); the
inputs and the statistics live in :mod:`stellarexp.benches.sweep_support`.

See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from stellarexp import stages, train
from stellarexp.bench import REPO_ROOT, new_parser, plain_details, register
from stellarexp.benches.sweep_support.inputs import fixed_params, write_star_table
from stellarexp.benches.sweep_support.trial_times import (
    overhead_stats,
    read_times,
    read_trials,
    trials_per_minute,
)

NOOP_STAGE = "bench_noop"
TIMES_ENV = "STELLAREXP_BENCH_TIMES"
OBJECTIVE_S_ENV = "STELLAREXP_BENCH_OBJECTIVE_S"
TARGET_OVERHEAD_S = 0.3

# the subprocesses' program: the real entry point with the trivial stage registered
_APP = "import sys; from stellarexp.benches.sweep import app_main; app_main(sys.argv[1:])"


# ------------------------------------------------------------------------- the trivial objective


def _log_time(number, kind: str, seconds: float) -> None:
    path = os.environ.get(TIMES_ENV)
    if path and number is not None:
        with open(path, "a") as fh:
            fh.write(f"{number} {kind} {seconds:.9f}\n")


def noop_stage(cfg, run) -> dict[str, float]:
    """Stage ``bench_noop``: return ``val/sigma_teff = (stage.x - 1)^2`` and log its own time.

    Sleeps ``$STELLAREXP_BENCH_OBJECTIVE_S`` seconds first when set (to check that the overhead
    does not depend on the objective's length). Appends ``<trial> objective <seconds>`` to the
    file ``$STELLAREXP_BENCH_TIMES``.

    Parameters
    ----------
    cfg : DictConfig
        The trial's composed config; ``cfg.stage.x`` is the swept value (0 when absent).
    run : object
        The trial's tracking run (unused: the stage logs nothing).

    Returns
    -------
    dict
        ``{"val/sigma_teff": (x - 1)^2}``, the metric the sweep minimises.
    """
    t0, c0, children0 = time.perf_counter(), time.process_time(), _children_cpu()
    delay = float(os.environ.get(OBJECTIVE_S_ENV) or 0.0)
    if delay > 0:
        time.sleep(delay)
    value = (float(cfg.stage.get("x", 0.0)) - 1.0) ** 2
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0

    number = HydraConfig.get().sweeper.get("trial_number") if HydraConfig.initialized() else None
    _log_time(number, "objective", elapsed)
    # CPU clocks of the sweeping process (all its threads) and of its finished child processes
    # at the objective's start: consecutive trials' stamps are one cycle apart
    _log_time(number, "objective_cpu", cpu)
    _log_time(number, "cpu_at", c0)
    _log_time(number, "children_cpu_at", children0)
    return {"val/sigma_teff": value}


def _children_cpu() -> float:
    """User + system seconds of this process's waited-for child processes (git, ...)."""
    t = os.times()
    return t.children_user + t.children_system


def _instrument() -> None:
    """Time the parts of each trial's job: composition, Hydra's job, the entry point's task.

    Wraps the launcher's ``launch`` (to know the trial) and its module's ``run_job``, the
    ``load_sweep_config`` of the config loader the launcher is given (the sweeper's
    ``CachedSweepLoader``, found on the instance, so no private module is imported) and
    ``stellarexp.train.run``; each wrapper reads the wall and CPU clocks twice, and the
    launcher's also stamps the CPU clock when it returns. Hydra loads its launcher from a module
    copy made by its plugin scan, so the launcher is patched once instantiated. When Hydra's
    objects do not look as expected, nothing is patched and the breakdown is simply missing.
    """
    try:
        from hydra.core.plugins import Plugins

        from stellarexp import train
    except ImportError:
        return
    current: dict[str, object] = {"trial": None}

    def timed(kind, fn):
        def wrapper(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                _log_time(current["trial"], kind, time.perf_counter() - t0)
                _log_time(current["trial"], f"{kind}_cpu", time.process_time() - c0)
        wrapper.bench_timed = True
        return wrapper

    def launch_wrapper(launch):
        def wrapper(job_overrides, initial_job_idx):
            lines = job_overrides[0] if len(job_overrides) == 1 else ()  # n_jobs=1: one job
            numbers = [o.split("=", 1)[1] for o in lines if o.startswith("hydra.sweeper.trial_number=")]
            current["trial"] = numbers[0] if numbers else None
            try:
                return launch(job_overrides, initial_job_idx)
            finally:
                _log_time(current["trial"], "launched_cpu_at", time.process_time())
                current["trial"] = None
        return wrapper

    instantiate = Plugins.instantiate_launcher

    def instantiate_wrapper(self, *args, **kwargs):
        launcher = instantiate(self, *args, **kwargs)
        # the trials' outermost composition call (it may call Hydra's own loader)
        loader_cls = type(getattr(kwargs.get("hydra_context"), "config_loader", None))
        compose = getattr(loader_cls, "load_sweep_config", None)
        if callable(compose) and not getattr(compose, "bench_timed", False):
            loader_cls.load_sweep_config = timed("compose", compose)
        module_globals = getattr(type(launcher).launch, "__globals__", {})
        run_job = module_globals.get("run_job")
        if callable(run_job):
            if not getattr(run_job, "bench_timed", False):
                module_globals["run_job"] = timed("job", run_job)
            launcher.launch = launch_wrapper(launcher.launch)  # the bound method, on the instance
        return launcher

    Plugins.instantiate_launcher = instantiate_wrapper
    train.run = timed("task", train.run)


def app_main(argv: Sequence[str]) -> None:
    """``python -m stellarexp.train <argv>`` with stage ``bench_noop`` registered (and, when
    ``$STELLAREXP_BENCH_TIMES`` is set, the parts of each trial timed).

    Parameters
    ----------
    argv : sequence of str
        The entry point's arguments (``-m`` and Hydra overrides).
    """
    stages.register(NOOP_STAGE, f"{__name__}:noop_stage")
    if os.environ.get(TIMES_ENV):
        _instrument()
    sys.argv = ["stellarexp.train", *argv]
    train.main()


# ------------------------------------------------------------------------- subprocesses


def _env(home: Path, times: Path | None = None, objective_s: float = 0.0) -> dict:
    env = dict(os.environ)
    env["STELLAREXP_HOME"] = str(home)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    if times is not None:
        env[TIMES_ENV] = str(times)
        env[OBJECTIVE_S_ENV] = str(objective_s)
    return env


def _start(overrides: list[str], env: dict, log: Path) -> tuple[subprocess.Popen, object]:
    fh = open(log, "w")  # noqa: SIM115 - closed by _wait
    proc = subprocess.Popen([sys.executable, "-c", _APP, *overrides], env=env, cwd=str(log.parent),
                            stdout=fh, stderr=subprocess.STDOUT)
    return proc, fh


def _wait(started: list[tuple[subprocess.Popen, object]], logs: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    failed = []
    for (proc, fh), log in zip(started, logs):
        try:
            rc = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        fh.close()
        if rc != 0:
            failed.append(f"{log.name} (exit {rc}):\n{log.read_text()[-3000:]}")
    if failed:
        raise RuntimeError("sweep subprocess failed: " + "\n".join(failed))


# ------------------------------------------------------------------------- the benchmark


def _round(value: float | None, digits: int) -> float | None:
    """``round``, passing ``None`` (a figure the run could not measure) through."""
    return None if value is None else round(value, digits)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``sweep`` (``python -m stellarexp.bench sweep --help``)."""
    ap = new_parser("sweep", bench_sweep, plain_details(__doc__, """
        JSON keys: overhead_s_median, _p90, _max, overhead_in_trial_s_median,
        overhead_between_trials_s_median, overhead_parts_s_median, overhead_cpu_s_median,
        overhead_children_cpu_s_median, overhead_parts_cpu_s_median, objective_s_median,
        overhead_trials, sampler, cpus; with the throughput part: trials_per_min_1_worker,
        trials_per_min_2_workers, ratio_2_vs_1, workers_with_trials_2w, phase_wall_s_1_worker,
        phase_wall_s_2_workers, throughput_study, throughput_target, throughput_trials,
        throughput_stars, throughput_fixed; then load_avg_1min_start, load_avg_1min_end,
        wall_s, targets (overhead_s_median 0.3) and, with --keep, home."""),
                    "python -m stellarexp.bench sweep --trials 10 --skip-throughput >> bench.jsonl")
    ap.add_argument("--trials", type=int, default=20, metavar="N",
                    help="measured trials of the trivial objective; one more runs first as the "
                         "warm-up; >= 1 (default: %(default)s)")
    ap.add_argument("--objective-s", type=float, default=0.0, metavar="SECONDS",
                    help="seconds the trivial objective sleeps, to check that the overhead does "
                         "not depend on the objective's length (default: %(default)s)")
    ap.add_argument("--sampler", default="tpe",
                    help="Optuna sampler of the overhead study, hydra.sweeper.sampler (tpe, "
                         "random, gp, qmc, ...; default: %(default)s)")
    ap.add_argument("--study", default="random_forest_color",
                    help="shipped study (sweep=<study>, stellarexp/studies/) of the throughput "
                         "part; its cost-fixing overrides are known for the random_forest, "
                         "xgboost, lightgbm and catboost studies, others need --fix "
                         "(default: %(default)s)")
    ap.add_argument("--throughput-trials", type=int, default=12, metavar="N",
                    help="trials of each throughput phase, shared by its workers; >= 4 "
                         "(default: %(default)s)")
    ap.add_argument("--stars", type=int, default=3000, metavar="N",
                    help="rows of the generated star table both parts sweep on "
                         "(default: %(default)s)")
    ap.add_argument("--estimators", type=int, default=150, metavar="N",
                    help="trees (boosting rounds) per throughput trial, in the cost-fixing "
                         "overrides; ignored with --fix (default: %(default)s)")
    ap.add_argument("--fix", action="append", default=None, metavar="OVERRIDE",
                    help="Hydra override fixing a cost hyperparameter of the throughput study, "
                         "e.g. +model.params.n_estimators=150; repeatable; replaces the built-in "
                         "ones of the study's model family (default: those)")
    ap.add_argument("--skip-throughput", action="store_true",
                    help="run the overhead part only")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary folder (home, journals, the subprocesses' logs); "
                         "its path is the result's 'home' (kept anyway when the benchmark fails)")
    ap.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                    help="seconds each phase's subprocesses may run before they are killed "
                         "(default: %(default)s)")
    return ap


@register("sweep", parser=build_parser)
def bench_sweep(argv: list[str]) -> dict:
    """Median per-trial overhead of an Optuna sweep, and trials per minute of 2 workers vs 1.

    Parameters
    ----------
    argv : list of str
        The options of ``python -m stellarexp.bench sweep --help`` (:func:`build_parser`).

    Returns
    -------
    dict
        The figures printed as one JSON line (``docs/benchmarks.md`` lists them).
    """
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.trials < 1 or args.throughput_trials < 4:
        # two workers need two trials each for a steady rate
        ap.error("--trials must be >= 1 and --throughput-trials >= 4")

    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="stellarexp-bench-sweep-"))
    keep = False
    try:
        home = tmp / "home"
        table = write_star_table(tmp / "stars.csv", args.stars)
        common = ["data=table", f"data.path={table}", "target=teff",
                  f"hydra.sweeper.results_dir={tmp / 'results'}"]

        # 1. overhead: trivial objective, one worker
        journal = tmp / "optuna" / "overhead.log"
        times = tmp / "times.txt"
        log = tmp / "overhead.log"
        started = _start(["-m", f"stage.name={NOOP_STAGE}", "stage.x=interval(-5, 5)", *common,
                          f"hydra.sweeper.n_trials={args.trials + 1}",
                          f"hydra.sweeper.sampler={args.sampler}", "hydra.sweeper.seed=0",
                          "hydra.sweeper.study_name=bench-overhead",
                          f"hydra.sweeper.storage={journal}",
                          f"hydra.sweep.dir={tmp / 'multirun' / 'overhead'}"],
                         _env(home, times, args.objective_s), log)
        _wait([started], [log], args.timeout)
        over = overhead_stats(read_trials(journal), read_times(times))
        result = {
            "bench": "sweep", "load_avg_1min_start": round(load0, 2), "cpus": os.cpu_count(),
            "sampler": args.sampler, "overhead_trials": over["n"],
            "overhead_s_median": round(over["median"], 4),
            "overhead_s_p90": round(over["p90"], 4), "overhead_s_max": round(over["max"], 4),
            "overhead_in_trial_s_median": round(over["in_trial"], 4),
            "overhead_between_trials_s_median": round(over["between"], 4),
            "objective_s_median": round(over["objective"], 6),
            "overhead_cpu_s_median": _round(over["cpu"], 4),
            "overhead_children_cpu_s_median": _round(over["children_cpu"], 4),
            "overhead_parts_s_median": {k: round(v, 4) for k, v in over["parts"].items()},
            "overhead_parts_cpu_s_median": {k: round(v, 4) for k, v in over["parts_cpu"].items()},
        }

        # 2. throughput of a CPU-bound baseline study: 1 worker, then 2 on a fresh journal
        if not args.skip_throughput:
            fixed = args.fix if args.fix is not None else fixed_params(args.study, args.estimators)
            env = _env(home)
            rates, walls, workers = {}, {}, {}
            for n_workers in (1, 2):
                journal = tmp / "optuna" / f"throughput-{n_workers}w.log"
                overrides = [
                    "-m", f"sweep={args.study}", *common, "trainer.n_jobs=1",
                    "stage.figure=false", "stage.save_models=false", "stage.predictions=false",
                    *fixed, f"hydra.sweeper.n_trials={args.throughput_trials}",
                    "hydra.sweeper.n_jobs=1", "hydra.sweeper.seed=0",
                    f"hydra.sweeper.storage={journal}"]
                logs = [tmp / f"throughput-{n_workers}w-{k}.log" for k in range(n_workers)]
                # one sweep folder per worker: Hydra names them by the second they start in
                started = [_start([*overrides, f"hydra.sweep.dir={tmp / 'multirun' / log.stem}"],
                                  env, log) for log in logs]
                t0 = time.perf_counter()
                _wait(started, logs, args.timeout)
                walls[n_workers] = time.perf_counter() - t0
                trials = read_trials(journal)
                states = {t.state for t in trials}
                if states != {"COMPLETE"} or len(trials) != args.throughput_trials:
                    raise RuntimeError(f"{n_workers}-worker study: {len(trials)} trials, states "
                                       f"{sorted(states)}")
                rates[n_workers] = trials_per_minute(trials)
                workers[n_workers] = len({t.worker for t in trials})
            result.update({
                "throughput_study": args.study, "throughput_target": "teff",
                "throughput_trials": args.throughput_trials, "throughput_stars": args.stars,
                "throughput_fixed": fixed,
                "trials_per_min_1_worker": round(rates[1], 2),
                "trials_per_min_2_workers": round(rates[2], 2),
                "ratio_2_vs_1": round(rates[2] / rates[1], 3),
                "workers_with_trials_2w": workers[2],
                "phase_wall_s_1_worker": round(walls[1], 1), "phase_wall_s_2_workers": round(walls[2], 1),
            })
        result.update({"load_avg_1min_end": round(os.getloadavg()[0], 2),
                       "wall_s": round(time.perf_counter() - t_start, 1),
                       "targets": {"overhead_s_median": TARGET_OVERHEAD_S}})
        if args.keep:
            result["home"] = str(tmp)
        return result
    except BaseException:
        keep = True  # the subprocesses' logs explain the failure
        print(f"sweep benchmark failed; logs kept in {tmp}", file=sys.stderr)
        raise
    finally:
        if not (args.keep or keep):
            shutil.rmtree(tmp, ignore_errors=True)
