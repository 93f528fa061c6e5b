"""A copied or moved store points its recorded locations at its new folder (stellarexp.tracking.relocate)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support.train import migrated_db


def _home_with_a_run(home, monkeypatch):
    from stellarexp.tracking import store

    (home / "mlruns").mkdir(parents=True)
    shutil.copyfile(migrated_db(), home / "mlruns" / "mlflow.db")
    _use_home(home, monkeypatch)
    client = store.connect()
    exp = store.ensure_experiment(client, "moved")
    run = client.create_run(exp, tags={"job_dir": str(home / "outputs" / "job"),
                                       "data_path": "/elsewhere/data.h5"})
    client.log_text(run.info.run_id, "hello", "notes/a.txt")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _use_home(home, monkeypatch):
    """Switch to ``home`` as a new process would (mlflow keeps the last URI in the environment)."""
    from stellarexp.tracking import store

    monkeypatch.setenv("STELLAREXP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store._RELOCATED.clear()


@pytest.mark.parametrize("inside", [False, True])
def test_a_moved_home_reads_and_writes_its_own_artifacts(tmp_path, monkeypatch, inside):
    """Moved beside or copied inside its original, then the original removed: the locations
    point into the new home, artifacts are read from it, other paths stay, a second open
    changes nothing."""
    from stellarexp.tracking import relocate, store

    old = tmp_path / "old"
    run_id = _home_with_a_run(old, monkeypatch)
    assert json.loads(relocate.record_path(old / "mlruns" / "mlflow.db").read_text())["home"] == str(old)
    new = (old / "copy") if inside else (tmp_path / "new")
    shutil.copytree(old, tmp_path / "staging")
    if not inside:
        shutil.rmtree(old)
    shutil.move(tmp_path / "staging", new)
    _use_home(new, monkeypatch)
    client = store.connect()
    run = client.get_run(run_id)
    assert run.info.artifact_uri.startswith((new / "mlruns" / "artifacts").as_uri() + "/")
    assert client.get_experiment_by_name("moved").artifact_location.startswith(new.as_uri())
    assert run.data.tags["job_dir"] == str(new / "outputs" / "job")
    assert run.data.tags["data_path"] == "/elsewhere/data.h5"  # not under the home: unchanged
    assert [f.path for f in client.list_artifacts(run_id, "notes")] == ["notes/a.txt"]
    db = new / "mlruns" / "mlflow.db"
    assert relocate.relocate(db, new) == 0  # already where it is
    assert json.loads(relocate.record_path(db).read_text())["store_dir"] == str(db.parent)


def test_a_home_without_a_location_record_is_recognised(tmp_path, monkeypatch):
    """A home last used before the record existed: its old place is read from its experiments."""
    from stellarexp.tracking import relocate, store

    old = tmp_path / "old"
    run_id = _home_with_a_run(old, monkeypatch)
    relocate.record_path(old / "mlruns" / "mlflow.db").unlink()
    new = tmp_path / "new"
    shutil.move(old, new)
    _use_home(new, monkeypatch)
    client = store.connect()
    assert client.get_run(run_id).info.artifact_uri.startswith(new.as_uri())
    assert [f.path for f in client.list_artifacts(run_id, "notes")] == ["notes/a.txt"]


def test_another_sqlite_store_keeps_its_artifacts_beside_it(tmp_path, monkeypatch):
    from stellarexp.tracking import store

    _use_home(tmp_path / "home", monkeypatch)
    db = tmp_path / "elsewhere" / "runs.db"
    db.parent.mkdir()
    shutil.copyfile(migrated_db(), db)
    client = store.connect(f"sqlite:///{db}")
    exp = store.ensure_experiment(client, "beside")
    assert client.get_experiment(exp).artifact_location == (db.parent / "artifacts" / "beside").as_uri()


def test_a_home_with_a_space_in_its_path_is_relocated(tmp_path, monkeypatch):
    """MLflow keeps locations as percent-encoded URIs (``old%20home``): they move too."""
    from stellarexp.tracking import relocate, store

    old = tmp_path / "old home"
    run_id = _home_with_a_run(old, monkeypatch)
    assert "%20" in store.connect().get_run(run_id).info.artifact_uri
    for with_record in (True, False):
        new = tmp_path / f"new home {with_record}"
        shutil.copytree(old, new)
        if not with_record:
            relocate.record_path(new / "mlruns" / "mlflow.db").unlink()
        _use_home(new, monkeypatch)
        client = store.connect()
        run = client.get_run(run_id)
        assert run.info.artifact_uri.startswith(new.as_uri() + "/"), run.info.artifact_uri
        assert run.data.tags["job_dir"] == str(new / "outputs" / "job")
        assert [f.path for f in client.list_artifacts(run_id, "notes")] == ["notes/a.txt"]


def test_a_store_elsewhere_without_a_record_is_left_as_it_is(tmp_path, monkeypatch):
    """An older SQLite store outside the home kept its artifacts in the home: opening it must not
    point them beside the database, where they never were."""
    from stellarexp.tracking import relocate, store

    home = tmp_path / "home"
    run_id = _home_with_a_run(home, monkeypatch)
    db = tmp_path / "elsewhere" / "runs.db"
    db.parent.mkdir()
    import sqlite3

    src, dst = sqlite3.connect(home / "mlruns" / "mlflow.db"), sqlite3.connect(db)
    src.backup(dst)  # the store runs in WAL mode: a file copy could miss the last writes
    src.close()
    dst.close()
    before = store.connect().get_run(run_id).info.artifact_uri
    _use_home(home, monkeypatch)
    client = store.connect(f"sqlite:///{db}")
    assert client.get_run(run_id).info.artifact_uri == before
    assert [f.path for f in client.list_artifacts(run_id, "notes")] == ["notes/a.txt"]
    assert relocate.record_path(db).is_file()


def test_a_read_only_store_still_opens(tmp_path, monkeypatch):
    """Relocation is best effort: a store whose folder takes no lock file opens with a warning."""
    from stellarexp.tracking import relocate, store

    home = tmp_path / "home"
    run_id = _home_with_a_run(home, monkeypatch)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(relocate, "file_lock", refuse)
    _use_home(home, monkeypatch)
    assert store.connect().get_run(run_id).info.status == "FINISHED"
