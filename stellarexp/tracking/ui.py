"""``python -m stellarexp.tracking.ui`` (``make ui``): the MLflow UI on the default store.

Starts ``mlflow server`` bound to 127.0.0.1 on ``$STELLAREXP_HOME/mlruns/mlflow.db``, with new
experiments' artifacts under ``$STELLAREXP_HOME/mlruns/artifacts``. Existing runs keep their
absolute ``file://`` artifact locations, which the server reads directly (no artifact proxy).
When ``MLFLOW_TRACKING_URI`` names a remote server, that server already is the UI: its address
is printed instead. For each experiment it prints the address of its runs table opened on
stellarexp's saved view (the sigmas and the run-defining params as columns).

Safe defaults: the server binds 127.0.0.1 (this machine only) unless ``--host`` or
``STELLAREXP_UI_HOST`` says otherwise, and binding another interface without ``--auth`` (MLflow's
``basic-auth`` app, users and passwords in ``basic_auth.ini``) prints a warning: the UI then
shows and accepts every run to anyone who can reach the port. See README, "Security".
"""

from __future__ import annotations

import argparse
import os
import sys

from mlflow.entities import ViewType

from stellarexp.tracking import display, store

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_host() -> str:
    """``$STELLAREXP_UI_HOST``, else 127.0.0.1."""
    return os.environ.get("STELLAREXP_UI_HOST") or "127.0.0.1"


def ui_command(*, uri: str | None = None, host: str | None = None, port: int = 5000,
               workers: int = 1, auth: bool = False) -> list[str]:
    """The ``mlflow server`` command line for a local store (``uri`` default: the resolved one).

    ``host`` defaults to :func:`default_host`; ``auth`` adds ``--app-name basic-auth``.
    """
    uri = store.resolve_uri(uri)
    if not store.is_local(uri):
        raise ValueError(f"{uri} is a remote tracking server; open it in a browser instead")
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", uri,
            "--default-artifact-root", store.default_artifact_root().as_uri(),
            "--no-serve-artifacts",
            "--host", host or default_host(), "--port", str(port), "--workers", str(workers),
            *(["--app-name", "basic-auth"] if auth else [])]


def runs_views(uri: str, base: str) -> list[tuple[str, str]]:
    """``(experiment, address)`` of each active experiment's runs table opened on stellarexp's
    saved view (added to experiments that lack it; :mod:`stellarexp.tracking.display`).

    Best effort: a store that cannot be read gives an empty list (the UI starts anyway).
    """
    try:
        client = store.connect(uri)
        # MLflow's own "Default" experiment holds no stellarexp runs
        experiments = [e for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
                       if e.name != "Default"]
        for exp in experiments:
            store.add_runs_view(client, exp)
    except Exception:  # noqa: BLE001 - the links are a convenience
        return []
    return [(e.name, display.view_url(base, e.experiment_id)) for e in experiments]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, print the address and replace this process with the MLflow server."""
    parser = argparse.ArgumentParser(prog="python -m stellarexp.tracking.ui",
                                     description="MLflow UI on the stellarexp tracking store")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_UI_PORT", "5000")))
    parser.add_argument("--host", default=default_host(),
                        help="interface to bind (default $STELLAREXP_UI_HOST or 127.0.0.1: "
                             "this machine only)")
    parser.add_argument("--auth", action="store_true",
                        help="require a user and password (MLflow basic-auth; see README Security)")
    parser.add_argument("--uri", default=None, help="backend store (default: the stellarexp store)")
    args = parser.parse_args(argv)
    uri = store.resolve_uri(args.uri)
    if not store.is_local(uri):
        print(f"runs are tracked on the server {uri}: open it in a browser")
        return 0
    if uri.startswith("sqlite:///"):
        store.default_artifact_root().mkdir(parents=True, exist_ok=True)
        store.prepare_local(uri)  # a copied or moved store shows its own artifacts
    views = runs_views(uri, f"http://{args.host}:{args.port}")
    cmd = ui_command(uri=uri, host=args.host, port=args.port, auth=args.auth)
    if args.host not in LOOPBACK and not args.auth:
        print(f"warning: binding {args.host} without --auth: anyone who reaches port {args.port} "
              "can read and change every run (see README, Security)", file=sys.stderr, flush=True)
    print(f"MLflow UI on http://{args.host}:{args.port}  (store {uri}; Ctrl-C stops it)", flush=True)
    for name, url in views:
        print(f"  {name}, runs table with the sigmas and run params: {url}", flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
