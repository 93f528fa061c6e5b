"""Secrets never reach disk: a corpus of credential forms, masked by the redactor and absent from
everything a sweep writes (MLflow database and artifacts, Optuna journal, results file, Hydra's
sweep record, logs) except Hydra's own ``.hydra/`` folders, which keep the literal command line
(README, "Security": never put a secret on the command line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stellarexp.tracking import redact
from tests.support.tables import write_star_csv

# (text holding a secret, the secret): every form the redactor must catch
CORPUS = [
    ("postgresql://u:k9+PW/X=@127.0.0.1:5432/db", "k9+PW/X="),
    ("mysql://:myPW77@host/db", "myPW77"),
    ("redis://:p@ss@h:6379/0", "p@ss"),
    ("host=db password=dsnPW1 port=5432", "dsnPW1"),
    ("https://h/x?user=a&password=qsPW2&x=1", "qsPW2"),
    ("https://h/x?access_token=qsTOK3", "qsTOK3"),
    ("Authorization: Bearer bearTOK4", "bearTOK4"),
    ("+tracking.tags.api_token=tokTOK5", "tokTOK5"),
    ("api-key: akTOK6", "akTOK6"),
    ('{"passwd": "pwPW7"}', "pwPW7"),
    ("pwd=pwdPW8", "pwdPW8"),
    ("AWS_ACCESS_KEY_ID=AKIA9", "AKIA9"),
    ("db.credential=credC10", "credC10"),
    ("client_secret='scS11 with space'", "scS11 with space"),
]
SECRET_KEYS = ["password", "passwd", "pwd", "token", "secret", "api_key", "apikey", "credential",
               "private_key", "dsn", "authorization", "bearer", "access_key_id"]
BENIGN = ["stage=baseline model=xgboost", "model.params.n_estimators=351", "https://user@host/path",
          "sqlite:////tmp/a.db", "file:///tmp/x@y", "data.path=/data/stars.csv"]


@pytest.mark.parametrize(("text", "secret"), CORPUS)
def test_every_form_is_masked_in_text_configs_and_overrides(text, secret):
    assert secret not in redact.redact_text(text)
    assert secret not in repr(redact.redact({"outer": {"value": text, "list": [text]}}))
    assert secret not in redact.redact_override(f"+x.note={text}")


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_key_names_mask_the_whole_value(key):
    assert redact.redact({"a": {key: "plain value"}}) == {"a": {key: redact.MASK}}
    assert redact.redact_override(f"+tracking.tags.{key}=plain") == f"+tracking.tags.{key}=***"


def test_benign_text_is_left_alone():
    for text in BENIGN:
        assert redact.redact_text(text) == text


def test_log_records_are_masked_whoever_logs_them(caplog):
    import logging

    redact.install_log_redaction()
    redact.install_log_redaction()  # twice: still one wrapper
    with caplog.at_level(logging.INFO):
        logging.getLogger("hydra.some.launcher").info("#0 : %s", "+tracking.tags.dsn='host=db password=logPW'")
    assert "logPW" not in caplog.text and "dsn='***'" in caplog.text


def _files_holding(root: Path, secrets: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if not path.is_file() or ".hydra" in path.parts:
            continue
        data = path.read_bytes()
        hits += [f"{path.relative_to(root)}: {s}" for s in secrets if s.encode() in data]
    return hits


def test_a_sweep_writes_no_secret_anywhere(tmp_path):
    write_star_csv(tmp_path / "stars.csv", n=120)
    env = {**os.environ, "STELLAREXP_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    tags = [f"+tracking.tags.t{i}={_hydra_quoted(text)}" for i, (text, _) in enumerate(CORPUS)]
    tags += ["+tracking.tags.api_token=keyTOK20", "+tracking.tags.dsn=keyDSN21"]
    secrets = [s for _, s in CORPUS] + ["keyTOK20", "keyDSN21"]
    proc = subprocess.run(
        [sys.executable, "-m", "stellarexp.train", "-m", "hydra.sweeper.study=random_forest_color",
         "hydra.sweeper.n_trials=2", f"hydra.sweeper.results_dir={tmp_path / 'results'}", "data=table",
         f"data.path={tmp_path / 'stars.csv'}", "target=teff", "evaluate.bootstrap=0", "stage.figure=false",
         "stage.predictions=false", "trainer.n_jobs=1", *tags],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (tmp_path / "console.log").write_text(proc.stdout + proc.stderr)
    assert list((tmp_path / "home" / "mlruns" / "optuna").glob("*")), "the Optuna journal was written"
    assert list((tmp_path / "results").glob("*.yaml")), "the results file was written"
    assert _files_holding(tmp_path, secrets) == []
    # Hydra's own record of the command line keeps them (documented, not ours to rewrite)
    assert _files_holding_hydra(tmp_path / "home" / "outputs", secrets[:1])


def _hydra_quoted(text: str) -> str:
    """A Hydra override value holding ``text`` literally (quoted, inner quotes escaped)."""
    if "'" not in text:
        return f"'{text}'"
    return '"' + text.replace('"', '\\"') + '"'


def _files_holding_hydra(root: Path, secrets: list[str]) -> list[str]:
    return [str(p) for p in root.rglob(".hydra/overrides.yaml") if any(s in p.read_text() for s in secrets)]
