"""Fixtures of the ``services`` suite: a PostgreSQL cluster and an MLflow server, one per session.

Finalizers stop both also when a test fails (pytest runs them on errors and on Ctrl-C).
"""

from __future__ import annotations

import pytest

from tests.services.servers import MlflowServer, start_postgres


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory):
    """Logs and artifacts of the session's services."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def postgres(services_dir):
    """A running throwaway PostgreSQL on 127.0.0.1 (installed from Debian packages if missing)."""
    pg = start_postgres(services_dir / "apt.log")
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def mlflow_server(postgres, services_dir):
    """``mlflow server`` on 127.0.0.1: PostgreSQL backend store, local artifact folder."""
    server = MlflowServer(postgres.create_database("mlflow"), services_dir / "artifacts",
                          log=services_dir / "mlflow-server.log")
    try:
        yield server.start()
    finally:
        server.stop()
