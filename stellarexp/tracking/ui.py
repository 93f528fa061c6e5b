"""``python -m stellarexp.tracking.ui`` (``make ui``): the MLflow UI on the default store.

Starts ``mlflow server`` bound to 127.0.0.1 on ``$STELLAREXP_HOME/mlruns/mlflow.db``, with new
experiments' artifacts under ``$STELLAREXP_HOME/mlruns/artifacts``. Existing runs keep their
absolute ``file://`` artifact locations, which the server reads directly (no artifact proxy).
When ``MLFLOW_TRACKING_URI`` names a remote server, that server already is the UI: its address
is printed instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from stellarexp.tracking import store


def ui_command(*, uri: str | None = None, host: str = "127.0.0.1", port: int = 5000,
               workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line for a local store (``uri`` default: the resolved one)."""
    uri = store.resolve_uri(uri)
    if not store.is_local(uri):
        raise ValueError(f"{uri} is a remote tracking server; open it in a browser instead")
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", uri,
            "--default-artifact-root", store.default_artifact_root().as_uri(),
            "--no-serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers)]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, print the address and replace this process with the MLflow server."""
    parser = argparse.ArgumentParser(prog="python -m stellarexp.tracking.ui",
                                     description="MLflow UI on the stellarexp tracking store")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_UI_PORT", "5000")))
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--uri", default=None, help="backend store (default: the stellarexp store)")
    args = parser.parse_args(argv)
    uri = store.resolve_uri(args.uri)
    if not store.is_local(uri):
        print(f"runs are tracked on the server {uri}: open it in a browser")
        return 0
    if uri.startswith("sqlite:///"):
        store.default_artifact_root().mkdir(parents=True, exist_ok=True)
    cmd = ui_command(uri=uri, host=args.host, port=args.port)
    print(f"MLflow UI on http://{args.host}:{args.port}  (store {uri}; Ctrl-C stops it)", flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
