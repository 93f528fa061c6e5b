"""Safe defaults: servers bind 127.0.0.1, weights load weights-only, credentials never reach MLflow."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.paths import REPO
from tests.support.train import make_stars


def test_ui_binds_loopback_unless_configured(home, monkeypatch, capsys):
    from stellarexp.tracking import ui

    monkeypatch.delenv("STELLAREXP_UI_HOST", raising=False)
    cmd = ui.ui_command(port=5123)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "--app-name" not in cmd
    monkeypatch.setenv("STELLAREXP_UI_HOST", "0.0.0.0")
    cmd = ui.ui_command(port=5123, auth=True)
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    # binding every interface without --auth warns (exec replaced by a stub)
    monkeypatch.setattr(ui.os, "execv", lambda *a: None)
    ui.main(["--port", "5123"])
    assert "without --auth" in capsys.readouterr().err


def test_every_torch_load_is_weights_only():
    """No ``torch.load`` without ``weights_only=True``; Lightning resumes weights-only too."""
    offenders = []
    for path in (REPO / "stellarexp").rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start(): text.find("\n\n", match.start())]
            depth, end = 0, 0
            for i, ch in enumerate(call):
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0 and ch == ")":
                    end = i
                    break
            if "weights_only=True" not in call[:end]:
                offenders.append(f"{path.relative_to(REPO)}: {call[:end + 1]}")
    assert offenders == []
    backbone = (REPO / "stellarexp" / "stages" / "backbone.py").read_text()
    assert "weights_only=True" in backbone[backbone.index("trainer.fit("):][:200]


def test_redaction_of_keys_urls_and_overrides():
    from stellarexp.tracking import redact

    cfg = {"tracking": {"uri": "postgresql://alice:s3cr3t@db:5432/mlflow", "api_token": "abc"},
           "data": {"password": "hunter2", "path": "/data/x.csv", "base_url": "https://u:pw@sas/x"},
           "list": ["http://bob:pw2@host/", 3]}
    out = redact.redact(cfg)
    text = repr(out)
    for secret in ("s3cr3t", "abc", "hunter2", ":pw@", "pw2"):
        assert secret not in text
    assert out["tracking"]["uri"] == "postgresql://alice:***@db:5432/mlflow"
    assert out["data"]["path"] == "/data/x.csv" and out["list"][1] == 3
    assert redact.redact_override("+data.db_password=x") == "+data.db_password=***"
    assert redact.redact_override("tracking.uri=http://a:b@h:5000") == "tracking.uri=http://a:***@h:5000"
    assert redact.redact_override("stage.lr=0.1") == "stage.lr=0.1"


def test_credentials_never_reach_params_tags_or_artifacts(home, tmp_path):
    """A job given a password (key and URL) through its config: nothing of it in MLflow."""
    import mlflow

    from tests.support.train import run_job

    make_stars(80).to_csv(tmp_path / "stars.csv", index=False)
    secret, url_secret = "Pa55-w0rd-XYZ", "urlpw-QRS"
    _, run = run_job(["data=table", f"data.path={tmp_path / 'stars.csv'}", "target=teff",
                      "model=random_forest", "+model.params.n_estimators=10", "evaluate.bootstrap=0",
                      "stage.figure=false", "stage.save_models=false", "stage.predictions=false",
                      f"+data.db_password={secret}",
                      f"+tracking.tags.source=https://user:{url_secret}@example.org/x"],
                     tmp_path / "job")
    client = mlflow.MlflowClient()
    dump = repr(run.data.params) + repr(run.data.tags)
    folder = Path(client.download_artifacts(run.info.run_id, "config", str(tmp_path / "dl")))
    for f in folder.rglob("*"):
        if f.is_file():
            dump += f.read_text()
    assert run.data.params["data.db_password"] == "***"
    assert secret not in dump and url_secret not in dump
    assert "https://user:***@example.org/x" in dump
