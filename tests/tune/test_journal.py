"""A torn write in the shared Optuna journal (a full disk) is moved aside with a report naming the
file, every complete operation is kept, and the studies load again."""

from __future__ import annotations

import logging

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from stellarexp.tune.journal import repair_journal


def _journal_with_two_studies(path):
    storage = JournalStorage(JournalFileBackend(str(path)))
    for name in ("a", "b"):
        study = optuna.create_study(study_name=name, storage=storage)
        for x in range(3):
            study.tell(study.ask(), float(x))
    return path.read_bytes()


def test_a_torn_tail_with_a_glued_append_is_repaired(tmp_path, caplog):
    from stellarexp.tune.storages import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path / "journal.log"
    intact = _journal_with_two_studies(path)
    last = intact.rstrip(b"\n").split(b"\n")[-1]
    # a write cut short by a full disk, the next append glued to it, and one more after it
    path.write_bytes(intact + last[: len(last) // 2] + last + b"\n" + last + b"\n")
    with pytest.raises(Exception):  # noqa: B017 - Optuna's own JSONDecodeError, as users saw it
        optuna.load_study(study_name="a", storage=JournalStorage(JournalFileBackend(str(path))))
    with caplog.at_level(logging.WARNING):
        storage = open_storage(str(path))
    assert str(path) in caplog.text and "torn record" in caplog.text
    for name in ("a", "b"):
        assert len(optuna.load_study(study_name=name, storage=storage).trials) == 3
    (backup,) = tmp_path.glob("journal.log.torn-*")
    assert backup.read_bytes() == last[: len(last) // 2] + b"\n"


def test_an_intact_or_missing_journal_is_left_alone(tmp_path):
    path = tmp_path / "journal.log"
    assert repair_journal(path) is None
    intact = _journal_with_two_studies(path)
    assert repair_journal(path) is None and path.read_bytes() == intact
    path.write_bytes(intact + b'{"op_code": 4, "half')  # only a torn tail
    assert "1 torn record" in repair_journal(path)
    assert path.read_bytes() == intact
