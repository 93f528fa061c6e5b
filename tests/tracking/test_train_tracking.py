"""Tracking: store resolution, params flattening and batching, the FAILED path, the UI command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from stellarexp import stages
from stellarexp.tracking import job_identity, params, run_handle, store, ui
from tests.support.train import isolated_env, run_job


def test_default_store_is_under_home(home, monkeypatch):
    assert store.default_uri() == f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"
    assert store.resolve_uri() == store.default_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    assert store.resolve_uri() == "http://elsewhere:5000"
    assert store.resolve_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"  # explicit wins
    assert not store.is_local("http://elsewhere:5000") and store.is_local(store.default_uri())


def test_experiment_gets_an_absolute_artifact_location(home, tmp_path):
    client = store.connect(f"sqlite:///{tmp_path / 'db.sqlite'}")
    exp_id = store.ensure_experiment(client, "my exp/1", tmp_path / "art")
    assert store.ensure_experiment(client, "my exp/1", tmp_path / "art") == exp_id
    location = client.get_experiment(exp_id).artifact_location
    assert location == (tmp_path / "art" / "my_exp_1").as_uri()
    client.delete_experiment(exp_id)
    assert store.ensure_experiment(client, "my exp/1") == exp_id  # restored, not recreated


def test_flatten_dotted_keys_lists_and_limits():
    flat = params.flatten({"a": {"b": 1, "c": {"d": None}}, "l": [1, "x"], "e": {}, "bad{key}": 2,
                      "long": "x" * 7000})
    assert flat["a.b"] == "1" and flat["a.c.d"] == "null" and flat["l"] == '[1, "x"]'
    assert "e" not in flat and flat["bad_key_"] == "2"
    assert len(flat["long"]) == params.MAX_PARAM_VALUE and flat["long"].endswith("...")


def _spied_run(tmp_path, monkeypatch):
    """A fresh run's handle whose client records the keyword arguments of every log_batch."""
    client = store.connect()
    exp_id = store.ensure_experiment(client, "batches", store.default_artifact_root())
    run = client.create_run(exp_id)
    calls = []
    original = client.log_batch
    monkeypatch.setattr(client, "log_batch", lambda *a, **k: (calls.append(k), original(*a, **k)))
    return client, run, run_handle.TrackedRun(client, run.info.run_id, tmp_path), calls


def test_many_params_and_metrics_are_logged_in_batches(home, tmp_path, monkeypatch):
    client, run, handle, calls = _spied_run(tmp_path, monkeypatch)
    handle.log_params({f"p{i}": i for i in range(250)})
    handle.log_metrics({f"m/{i}": float(i) for i in range(1500)})
    assert [len(c["params"]) for c in calls if "params" in c] == [100, 100, 50]
    assert [len(c["metrics"]) for c in calls if "metrics" in c] == [1000, 500]
    data = client.get_run(run.info.run_id).data
    assert len(data.params) == 250 and len(data.metrics) == 1500 and data.metrics["m/7"] == 7.0


def test_deferred_params_ride_with_the_metrics(home, tmp_path, monkeypatch):
    client, run, handle, calls = _spied_run(tmp_path, monkeypatch)
    handle.defer_params({f"p{i}": i for i in range(250)})
    assert calls == []  # nothing sent yet
    handle.log_metrics({f"m/{i}": float(i) for i in range(1500)})
    sizes = [(len(c.get("params", [])), len(c.get("metrics", []))) for c in calls]
    assert sizes == [(100, 900), (100, 600), (50, 0)]  # MLflow: 100 params, 1000 entities
    handle.flush()
    assert len(calls) == 3  # nothing left to send
    data = client.get_run(run.info.run_id).data
    assert len(data.params) == 250 and len(data.metrics) == 1500 and data.params["p249"] == "249"


def boom(cfg, run):
    """A stage that fails after logging something."""
    run.log_text("partial", "partial.txt")
    raise RuntimeError("the stage broke on purpose")


def test_failing_stage_ends_failed_with_traceback(home, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setitem(stages.STAGES, "boom", f"{__name__}:boom")
    with pytest.raises(RuntimeError, match="on purpose"):
        run_job(["stage.name=boom", "tracking.experiment=failures"], tmp_path / "job")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("failures")
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: the stage broke on purpose"
    trace = Path(client.download_artifacts(run.info.run_id, "error/traceback.txt",
                                           str(tmp_path))).read_text()
    assert "Traceback" in trace and "in boom" in trace and "on purpose" in trace
    assert run.data.params["stage.name"] == "boom"  # the deferred params reached the store
    assert mlflow.active_run() is None  # the run was closed


def test_unknown_stage_is_refused_before_a_run_opens():
    with pytest.raises(KeyError, match="registered stages"):
        stages.resolve("nope")
    with pytest.raises(ValueError, match="module:function"):
        stages.register("x", "no_colon")


def test_parent_run_and_extra_tags(home, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setitem(stages.STAGES, "noop", f"{__name__}:noop")
    client = store.connect()
    exp_id = store.ensure_experiment(client, "parents", store.default_artifact_root())
    parent = client.create_run(exp_id).info.run_id
    value, run = run_job(["stage.name=noop", "tracking.experiment=parents",
                          f"tracking.parent_run_id={parent}", "+tracking.tags.study=s1"],
                         tmp_path / "job")
    assert value == 1.5
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["study"] == "s1"
    assert run.data.metrics == {"val/sigma_teff": 1.5}
    assert mlflow.active_run() is None


def noop(cfg, run):
    return {"val/sigma_teff": 1.5}


def test_sweep_child_run_costs_few_requests(home, tmp_path, monkeypatch):
    """A trial's run (parent given, config artifacts off): created with its tags, params and
    metrics in one request, no second look-up of experiment or parent, one artifact (its
    config)."""
    from mlflow import MlflowClient

    from stellarexp import train

    monkeypatch.setitem(stages.STAGES, "noop", f"{__name__}:noop")
    client = store.connect()
    exp_id = store.ensure_experiment(client, "children", store.default_artifact_root())
    parent = client.create_run(exp_id).info.run_id
    job = ["stage.name=noop", "tracking.experiment=children", f"tracking.parent_run_id={parent}",
           "++tracking.config_artifacts=false", "++tracking.tags.optuna_trial=3"]
    run_job(job, tmp_path / "first")  # the process's first job looks both up
    calls: list[tuple[str, dict]] = []
    in_job = []  # the client calls made by the job itself (not by run_job's reading back)
    for name in ("log_batch", "get_run", "get_experiment_by_name", "log_text", "log_artifact"):
        original = getattr(MlflowClient, name)
        monkeypatch.setattr(MlflowClient, name, lambda self, *a, _n=name, _f=original, **k:
                            ((calls.append((_n, k)) if in_job else None), _f(self, *a, **k))[1])
    job_run = train.run
    monkeypatch.setattr(train, "run",
                        lambda cfg: (in_job.append(1), job_run(cfg), in_job.clear())[1])
    value, run = run_job(job, tmp_path / "second")
    # no experiment or parent request; the config file (log_text uploads it with log_artifact),
    # then params and metrics together
    assert [n for n, _ in calls] == ["log_text", "log_artifact", "log_batch"]
    (batch,) = [k for n, k in calls if n == "log_batch"]
    assert {m.key for m in batch["metrics"]} == {"val/sigma_teff"}
    keys = {p.key for p in batch["params"]}
    assert "stage.name" in keys and not [k for k in keys if k.startswith("tracking.")]
    assert value == 1.5 and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["optuna_trial"] == "3"
    assert "stage.name=noop" in run.data.tags["overrides"]  # the command line, as a tag
    assert run.data.params["stage.name"] == "noop" and run.data.metrics == {"val/sigma_teff": 1.5}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "config")] == ["config/config.yaml"]


def test_experiment_deleted_between_jobs_is_restored(home, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setitem(stages.STAGES, "noop", f"{__name__}:noop")
    job = ["stage.name=noop", "tracking.experiment=deleted-between-jobs"]
    _, first = run_job(job, tmp_path / "a")
    client = mlflow.MlflowClient()
    client.delete_experiment(first.info.experiment_id)  # the process still knows its id
    _, second = run_job(job, tmp_path / "b")
    assert second.info.experiment_id == first.info.experiment_id
    assert client.get_experiment(first.info.experiment_id).lifecycle_stage == "active"
    assert second.info.status == "FINISHED" and second.data.metrics == {"val/sigma_teff": 1.5}


def test_git_commit_tag_is_a_sha_or_unknown():
    sha = job_identity.git_commit()
    assert sha == "unknown" or len(sha.split("-")[0]) == 40


def test_ui_command_binds_localhost_on_the_default_store(home):
    cmd = ui.ui_command(port=5123)
    assert cmd[1:4] == ["-m", "mlflow", "server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == store.default_uri()
    assert cmd[cmd.index("--default-artifact-root") + 1] == (home / "mlruns" / "artifacts").as_uri()
    with pytest.raises(ValueError, match="remote"):
        ui.ui_command(uri="http://server:5000")


@pytest.mark.slow
def test_ui_serves_the_store(tmp_path):
    """`python -m stellarexp.tracking.ui` answers on 127.0.0.1 (starting it takes ~20 s here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "stellarexp.tracking.ui", "--port", str(port)],
                            env=isolated_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the MLflow UI did not answer within 90 s")
        assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert os.path.isdir(tmp_path / "mlruns")


def test_ddp_worker_processes_log_nothing(tmp_path, monkeypatch):
    """Rank > 0 of a DDP launch gets a handle that writes nothing: one run per job, not per GPU."""
    from stellarexp.tracking import run_handle, runs, store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = {"stage": {"name": "baseline"}, "target": "teff",
           "tracking": {"uri": uri, "experiment": "ddp", "artifact_root": str(tmp_path / "art")}}
    with runs.tracked_run(cfg, tmp_path / "out") as rank0:
        rank0.log_metrics({"val/sigma_teff": 1.0})
        monkeypatch.setenv("LOCAL_RANK", "1")
        assert run_handle.process_rank() == 1
        with runs.tracked_run(cfg, tmp_path / "out") as worker:
            assert isinstance(worker, run_handle.WorkerRun)
            assert worker.run_id == rank0.run_id
            worker.log_metrics({"val/sigma_teff": 99.0})
            worker.log_text("x", "worker.txt")
        monkeypatch.delenv("LOCAL_RANK")
    client = store.connect(uri)
    exp = client.get_experiment_by_name("ddp")
    found = client.search_runs([exp.experiment_id])
    assert len(found) == 1
    assert found[0].data.metrics["val/sigma_teff"] == 1.0
    assert not [a for a in client.list_artifacts(found[0].info.run_id) if a.path == "worker.txt"]


def test_run_params_leave_out_the_size_table_and_group_per_band_settings():
    import json

    from stellarexp.tracking.params import run_params

    cfg = {"data": {"name": "synthetic", "size": "tiny", "sizes": {"tiny": {"n_fields": 2}},
                    "zp": {"u": 0.02, "g": 0.01, "r": 0.01, "i": 0.01, "z": 0.02},
                    "mixed": {"u": 1, "x": 2}}}
    params = run_params(cfg, ["data.zp.u=0.02", "data.mixed=..."])
    assert "data.sizes.tiny.n_fields" not in params and params["data.size"] == "tiny"
    # an override of one band logs the band's whole setting, as one JSON value
    assert json.loads(params["data.zp"]) == {"u": 0.02, "g": 0.01, "r": 0.01, "i": 0.01, "z": 0.02}
    assert params["data.mixed.u"] == "1" and params["data.mixed.x"] == "2"  # not a per-band setting
