"""Faults: processes killed with SIGKILL and a full disk, each followed by the rerun a user would do.

- kill -9 during backbone training: the run is ended KILLED by the next job, which resumes from
  the killed run's last checkpoint;
- kill -9 during a sweep: the toy-app test ``test_sweeper_app.py::test_killed_sweep_resumes_to_
  exactly_n_trials`` covers the Optuna side; here the real entry point with MLflow runs;
- kill -9 during a simulation or a dataset build: nothing half-written is trusted later;
- a full disk while an artifact is written: a clear error, no truncated file, a usable store.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.support.train import isolated_env, make_stars, migrated_db


def _env(home: Path) -> dict:
    env = isolated_env(home)
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", MKL_NUM_THREADS="1",
               HYDRA_FULL_ERROR="0")
    return env


def _fresh_home(path: Path) -> Path:
    (path / "mlruns").mkdir(parents=True)
    shutil.copyfile(migrated_db(), path / "mlruns" / "mlflow.db")
    return path


def _start(args: list[str], home: Path, log: Path) -> subprocess.Popen:
    """``python <args>`` in its own process group (so SIGKILL reaches its workers too)."""
    return subprocess.Popen([sys.executable, *args], cwd=home, env=_env(home),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, log: Path, timeout: float = 240.0) -> None:
    """SIGKILL ``proc``'s process group as soon as ``ready()`` is true."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the process ended ({proc.returncode}) before the kill point:\n"
                            f"{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"kill point not reached in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _run(args: list[str], home: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=home, env=_env(home), capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _client(home: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")


def _all_runs(client):
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=1000)


# ------------------------------------------------------------------------- backbone training


@pytest.mark.slow
def test_kill9_during_backbone_training_then_rerun_resumes(tmp_path):
    pytest.importorskip("torch")
    from tests.support.images import TINY, write_image_dataset

    home = _fresh_home(tmp_path / "home")
    data = tmp_path / "img.h5"
    write_image_dataset(data)
    args = ["-m", "stellarexp.train", *TINY, "target=teff", f"data.dataset_path={data}",
            "stage.max_epochs=6", "stage.patience=50"]
    log = tmp_path / "first.log"
    proc = _start(args, home, log)
    ckpts = lambda: list((home / "outputs" / "backbone").glob("*/*/checkpoints/last.ckpt"))
    _kill_when(proc, lambda: bool(ckpts()), log)

    client = _client(home)
    (killed,) = _all_runs(client)
    assert killed.info.status == "RUNNING"  # nobody ended it: the process died outright
    assert killed.data.tags["pid"] == str(proc.pid)

    _run(args, home)  # the same command again
    runs = {r.info.run_id: r for r in _all_runs(client)}
    assert len(runs) == 2 and all(r.info.status != "RUNNING" for r in runs.values())
    old = runs.pop(killed.info.run_id)
    (new,) = runs.values()
    assert old.info.status == "KILLED" and "killed" in old.data.tags["killed_reason"]
    assert new.info.status == "FINISHED"
    assert new.data.tags["resumed_run"] == killed.info.run_id
    assert new.data.tags["resumed_from"] == str(ckpts()[0])
    assert new.data.tags["checkpoint_dir"] == old.data.tags["checkpoint_dir"]
    # the rerun continued the epochs: all 6 in the history, the first ones not trained again
    assert new.data.metrics["train/epochs"] == 6
    steps = [m.step for m in client.get_metric_history(new.info.run_id, "train/loss")]
    assert steps and steps[0] >= 1 and steps[-1] == 5


def test_dead_runs_are_ended_killed_and_live_ones_kept(home):
    """The stale-run sweep itself: a dead pid, a recycled pid, a live process, another host."""
    import mlflow

    from stellarexp.tracking import stale, store

    client = mlflow.MlflowClient(store.default_uri())
    exp = store.ensure_experiment(client, f"stale-{uuid.uuid4().hex[:8]}", store.default_artifact_root())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = stale.process_tags()
    runs = {
        "dead": {**me, "pid": str(dead.pid), "pid_start": "1"},
        "recycled": {**me, "pid_start": "0"},  # our pid, started at another time
        "alive": dict(me),
        "other_host": {**me, "host": "elsewhere", "pid": str(dead.pid)},
        "untagged": {},
    }
    ids = {name: client.create_run(exp, run_name=name, tags=tags).info.run_id
           for name, tags in runs.items()}
    # our own pid is skipped as the caller's: pretend the "recycled" run came from a child
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        client.set_tag(ids["recycled"], "pid", str(child.pid))
        client.set_tag(ids["alive"], "pid", str(child.pid))
        client.set_tag(ids["alive"], "pid_start", stale._start_time(child.pid))
        ended = stale.end_dead_runs(client, [exp])
    finally:
        child.kill()
        child.wait()
    assert set(ended) == {ids["dead"], ids["recycled"]}
    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {"dead": "KILLED", "recycled": "KILLED", "alive": "RUNNING",
                      "other_host": "RUNNING", "untagged": "RUNNING"}


# ------------------------------------------------------------------------------------ sweeps


@pytest.mark.slow
def test_kill9_during_a_sweep_then_rerun_completes_the_study(tmp_path):
    """The real entry point: kill -9 after the first finished trial, rerun, exactly n_trials and
    no MLflow run left RUNNING (the toy-app test covers the trial bookkeeping in detail)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    home = _fresh_home(tmp_path / "home")
    make_stars(240).to_csv(tmp_path / "stars.csv", index=False)
    args = ["-m", "stellarexp.train", "-m", "sweep=random_forest_color", "target=teff",
            "data=table", f"data.path={tmp_path / 'stars.csv'}", "hydra.sweeper.n_trials=4",
            f"hydra.sweeper.results_dir={tmp_path / 'results'}", "evaluate.bootstrap=0",
            "stage.figure=false", "stage.save_models=false", "stage.predictions=false",
            "trainer.n_jobs=1"]
    journal = home / "mlruns" / "optuna" / "journal.log"

    def trials():
        if not journal.is_file():
            return []
        storage = JournalStorage(JournalFileBackend(str(journal)))
        studies = optuna.get_all_study_summaries(storage)
        return optuna.load_study(study_name=studies[0].study_name, storage=storage).get_trials() if studies else []

    log = tmp_path / "first.log"
    proc = _start(args, home, log)
    # right after a trial finishes the sweeper asks the next one: the kill may land between
    # that ask and the worker recording itself on the trial (an orphan the rerun must fail)
    _kill_when(proc, lambda: any(t.state.is_finished() for t in trials()), log, timeout=400)
    assert sum(t.state.is_finished() for t in trials()) < 4

    _run(args, home)
    done = trials()
    # every trial finished; the one the kill interrupted is FAIL and was run again (not counted)
    counted = [t for t in done if not t.user_attrs.get("retried")]
    assert len(counted) == 4 and all(t.state.is_finished() for t in done)
    assert sum(t.state.name == "COMPLETE" for t in counted) >= 3
    # the trial the kill interrupted (RUNNING, or asked and not yet recorded) is run again first
    detail = [(t.number, t.state.name, t.params, dict(t.user_attrs)) for t in done]
    for t in done:
        if t.user_attrs.get("retried"):
            assert any(r.user_attrs.get("retry_of") == t.number for r in done), detail
    runs = _all_runs(_client(home))
    assert runs and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert parent.info.status == "FINISHED"


# ------------------------------------------------------------------- simulation and build


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".partial")}


@pytest.mark.slow
def test_kill9_during_simulation_then_rerun_gives_the_same_survey(tmp_path, tiny_home):
    """Killed while the second field renders (one worker): the rerun keeps the finished field,
    renders the other, and the survey equals the uninterrupted one byte for byte."""
    home = tmp_path / "home"
    home.mkdir()
    root = home / "data" / "synthetic" / "tiny"
    args = ["-m", "stellarexp.data", "simulate", "data=synthetic", "data.size=tiny",
            "data.workers=1", "progress=false"]
    log = tmp_path / "sim.log"
    proc = _start(args, home, log)
    _kill_when(proc, lambda: len(list((root / "fields").glob("*-*-*[0-9].csv"))) >= 1, log)
    assert not (root / "survey.json").exists()  # not complete: nothing downstream trusts it
    from stellarexp.survey.simulate import survey_complete

    assert not survey_complete(root)
    _run(args, home)
    reference = tiny_home / "data" / "synthetic" / "tiny"
    got, want = _files(root), _files(reference)
    assert sorted(got) == sorted(want)
    differ = [k for k in want if k != "survey.json" and got[k] != want[k]]
    assert differ == []


KILL_IN_WRITE = textwrap.dedent("""
    import io, os, signal, sys
    import stellarexp.data.dataset as ds
    class Killed(io.FileIO):  # SIGKILL halfway through writing the HDF5 file
        def write(self, b):
            n = super().write(b)
            if self.tell() >= 1 << 14:
                os.kill(os.getpid(), signal.SIGKILL)
            return n
    ds._WRITE_CHUNK = 1 << 12
    ds.open = lambda path, mode: Killed(path, mode)
    from stellarexp.data.__main__ import main
    sys.exit(main(sys.argv[1:]))
""")


def test_kill9_while_writing_the_dataset_then_rerun_builds_it(tmp_path, tiny_home, tiny_survey):
    from stellarexp.data.dataset import read_attrs

    home = tmp_path / "home"
    shutil.copytree(tiny_home / "data" / "synthetic", home / "data" / "synthetic")
    script = tmp_path / "kill_in_write.py"
    script.write_text(KILL_IN_WRITE)
    args = ["build", "data=synthetic", "data.size=tiny", "progress=false"]
    out = home / "data" / "datasets" / "synthetic-tiny.h5"
    first = subprocess.run([sys.executable, str(script), *args], cwd=home, env=_env(home),
                           capture_output=True, text=True, timeout=400, check=False)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert not out.exists()
    partial = list(out.parent.glob(".synthetic-tiny.h5.*.partial"))
    assert len(partial) == 1  # the half-written file, under a name no reader opens

    # every reader refuses the partial file's name, and the rerun builds the dataset afresh
    proc = _run(["-m", "stellarexp.data", *args], home)
    assert "not found" not in proc.stderr
    assert read_attrs(out)["fingerprint"] == read_attrs(tiny_survey["dataset"])["fingerprint"]


# --------------------------------------------------------------------------------- full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (real ENOSPC); without mount rights, a folder whose writes fail ENOSPC
    past 1 MiB (the low-level copy is patched: the last resort)."""
    mount = tmp_path / "small"
    mount.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                        capture_output=True, check=False).returncode == 0 if os.geteuid() == 0 else False
    yield mount, ok
    if ok:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_during_an_artifact_write(home, tmp_path, small_disk, monkeypatch):
    import mlflow

    from stellarexp.tracking import diskfull, store
    from stellarexp.tracking.runs import tracked_run

    mount, real = small_disk
    if not real:  # last resort: shutil's copy raises ENOSPC once 1 MiB has been written
        original = shutil.copyfileobj

        def copyfileobj(fsrc, fdst, length=0):
            if str(getattr(fdst, "name", "")).startswith(str(mount)):
                fdst.write(fsrc.read(1 << 20))
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(fsrc, fdst, length or 1 << 16)

        monkeypatch.setattr(shutil, "copyfileobj", copyfileobj)
        monkeypatch.setattr(shutil, "_fastcopy_sendfile", lambda *a: (_ for _ in ()).throw(
            shutil._GiveupOnFastCopy()), raising=False)
    big = tmp_path / "predictions.csv"
    big.write_bytes(os.urandom(3 << 20))
    exp = f"diskfull-{uuid.uuid4().hex[:8]}"
    cfg = {"stage": {"name": "baseline"}, "tracking": {"experiment": exp, "artifact_root": str(mount)}}
    with pytest.raises(diskfull.ArtifactStoreFull) as info, tracked_run(cfg, tmp_path / "job") as run:
        run.log_text("ok\n", "notes/small.txt")
        run_id = run.run_id
        run.log_artifact(big, "predictions")
    message = str(info.value)
    assert "no space left" in message and "predictions/predictions.csv" in message
    assert run_id in message and "tracking.artifact_root" in message
    client = mlflow.MlflowClient(store.default_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "no space left" in run.data.tags["error"]
    # no truncated file in the store; what was written before is intact and readable
    art = Path(run.info.artifact_uri.removeprefix("file://"))
    assert not (art / "predictions" / "predictions.csv").exists()
    assert (art / "notes" / "small.txt").read_text() == "ok\n"
    assert "predictions" not in {f.path for f in client.list_artifacts(run_id)} or \
        not client.list_artifacts(run_id, "predictions")
    # the store goes on: after freeing space, the next run logs normally
    big.write_bytes(b"x" * 1000)
    with tracked_run(cfg, tmp_path / "job2") as again:
        again.log_artifact(big, "predictions")
    assert client.get_run(again.run_id).info.status == "FINISHED"


def test_a_run_the_full_database_cannot_end_is_ended_failed_with_its_cause_by_the_next_job(home, tmp_path):
    """The database write of the run's end fails (disk full): the job keeps the cause beside
    its output; the next job ends the run FAILED with that cause, not KILLED without one."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from stellarexp.tracking import stale, store
    from stellarexp.tracking.run_handle import TrackedRun
    from stellarexp.tracking.runs import tracked_run

    full = MlflowException("(sqlite3.OperationalError) database or disk is full")

    def refuse(*args, **kwargs):
        raise full

    exp = f"dbfull-{uuid.uuid4().hex[:8]}"
    cfg = {"stage": {"name": "baseline"}, "tracking": {"experiment": exp}}
    job = tmp_path / "job"
    with pytest.MonkeyPatch.context() as patch, pytest.raises(ValueError, match="the job's own error"), \
            tracked_run(cfg, job) as run:
        run_id = run.run_id
        # from here on the database takes no write: tags, artifacts, the run's end
        patch.setattr(MlflowClient, "set_terminated", refuse)
        patch.setattr(TrackedRun, "set_tags", refuse)
        raise ValueError("the job's own error")
    client = mlflow.MlflowClient(store.default_uri())
    assert client.get_run(run_id).info.status == "RUNNING"  # what the issue saw
    kept = stale.kept_failure(str(job.resolve()), run_id)
    assert kept["status"] == "FAILED" and "the job's own error" in kept["error"]
    assert "database or disk is full" in kept["store_error"]
    # the job's process is gone: the next job's start records the cause
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client.set_tag(run_id, "pid", str(dead.pid))
    client.set_tag(run_id, "pid_start", "1")
    assert stale.end_dead_runs(client, [client.get_run(run_id).info.experiment_id]) == [run_id]
    after = client.get_run(run_id)
    assert after.info.status == "FAILED"
    assert "the job's own error" in after.data.tags["error"]
    assert "database or disk is full" in after.data.tags["killed_reason"]


def test_full_disk_while_writing_a_dataset_is_one_clear_error(tmp_path, monkeypatch, capfd):
    """The file the dataset is written to raises ENOSPC after 64 KiB: one DatasetError naming the
    file, the space needed and free, and what to do; no HDF5 error output; nothing under the
    final name and no partial file left."""
    import io

    from stellarexp.data import dataset
    from tests.support.train import write_tiny_dataset

    class Full(io.FileIO):
        def write(self, b):
            if self.tell() + len(b) > 1 << 16:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)

    monkeypatch.setattr(dataset, "_WRITE_CHUNK", 1 << 12)
    monkeypatch.setattr(dataset, "open", lambda path, mode: Full(path, mode), raising=False)
    out = tmp_path / "datasets" / "tiny.h5"
    with pytest.raises(dataset.DatasetError) as info:
        write_tiny_dataset(out, n=200)
    message = str(info.value)
    assert str(out) in message and "no space left" in message and "MB free" in message
    assert "STELLAREXP_HOME" in message
    assert not out.exists() and list(out.parent.iterdir()) == []
    captured = capfd.readouterr()
    assert "HDF5" not in captured.err and "h5py" not in captured.err
    monkeypatch.undo()
    write_tiny_dataset(out, n=200)  # space freed: the same write succeeds
    assert dataset.read_attrs(out)["name"] == "tiny-0"
