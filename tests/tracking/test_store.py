"""The local MLflow store: SQLite in write-ahead-log mode, experiments typed for the MLflow 3 UI."""

from __future__ import annotations

import sqlite3


def test_local_store_uses_wal_and_experiments_open_on_runs(tmp_path, monkeypatch):
    from stellarexp.tracking import store

    db = tmp_path / "mlruns" / "mlflow.db"
    client = store.connect(f"sqlite:///{db}")
    exp_id = store.ensure_experiment(client, "walcheck", tmp_path / "artifacts")
    # the mode is stored in the file: a fresh connection sees it
    mode = sqlite3.connect(str(db)).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"
    tags = client.get_experiment(exp_id).tags
    assert tags.get("mlflow.experimentKind") == "custom_model_development"
    # a second ensure returns the same experiment, and runs can be written concurrently-safe
    assert store.ensure_experiment(client, "walcheck", tmp_path / "artifacts") == exp_id
    run = client.create_run(exp_id)
    client.log_metric(run.info.run_id, "m", 1.5)
    assert client.get_run(run.info.run_id).data.metrics["m"] == 1.5
