"""Throwaway real services for the ``services`` suite: a PostgreSQL cluster and an MLflow server.

Both listen on 127.0.0.1 on a free port and live in a temporary directory; ``stop()`` ends exactly
the processes started here (by their id) and removes the directory. PostgreSQL comes from the
Debian packages, installed with apt when missing (CI starts from a bare machine, as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PG_USER, PG_PASSWORD = "stellarexp", "services-test"


class ServiceError(RuntimeError):
    """A service could not be installed or started (the message says which and why)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def ensure_postgres_installed(log: Path) -> Path:
    """The PostgreSQL ``bin`` folder; installs the Debian ``postgresql`` package when missing."""
    bindir = _pg_bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ServiceError("PostgreSQL is not installed and this is no root Debian machine: "
                           "install it (apt-get install -y postgresql) and re-run")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(log, "ab") as out:
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends",
                                            "postgresql"]):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                              timeout=900, check=False).returncode:
                raise ServiceError(f"{' '.join(cmd)} failed; see {log}")
    bindir = _pg_bindir()
    if bindir is None:
        raise ServiceError(f"postgresql installed but no initdb found; see {log}")
    return bindir


def _as_db_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Postgres:
    """A PostgreSQL cluster of our own (trust on the socket, password on 127.0.0.1)."""

    bindir: Path
    root: Path
    port: int = 0
    started: bool = False

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def start(self) -> Postgres:
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", PG_USER,
                   f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                   "--encoding=UTF8", "--no-instructions"], "initdb")
        self.port = free_port()
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                   f"-c unix_socket_directories={self.root} -c fsync=off "
                   f"-c max_connections=200")
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l",
                   str(self.root / "postgres.log"), "-o", options, "-w", "-t", "120", "start"],
                  "pg_ctl start")
        self.started = True
        return self

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its SQLAlchemy URL."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER,
                                password=PG_PASSWORD, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(Exception):
                subprocess.run(_as_db_owner([str(self.bindir / "pg_ctl"), "-D", str(self.datadir),
                                             "-m", "fast", "-w", "stop"]),
                               capture_output=True, timeout=60, check=False)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, cmd: list[str], what: str) -> None:
        proc = subprocess.run(_as_db_owner(cmd), capture_output=True, text=True, timeout=180,
                              cwd=self.root, check=False)
        if proc.returncode:
            log = self.root / "postgres.log"
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise ServiceError(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}{tail}")


def start_postgres(log: Path) -> Postgres:
    """Install when missing, then start a cluster in a fresh folder under the temp dir.

    The folder is made with :func:`tempfile.mkdtemp` (not pytest's private tmp tree) because the
    ``postgres`` user must be able to reach it.
    """
    bindir = ensure_postgres_installed(log)
    root = Path(tempfile.mkdtemp(prefix="stellarexp-pg-"))
    os.chmod(root, 0o755)
    pg = Postgres(bindir, root)
    try:
        return pg.start()
    except BaseException:
        pg.stop()
        raise


@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a database backend and a local artifact folder."""

    backend_uri: str
    artifacts: Path
    port: int = 0
    log: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240.0) -> MlflowServer:
        self.port = self.port or free_port()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
               "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "2"]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        # own session: stop() ends the server and its worker processes as one group
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"mlflow server exited with {self.proc.returncode}; "
                                   f"see {self.log}")
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"{self.uri}/health", timeout=5) as resp:
                if resp.status == 200:
                    return self
            time.sleep(1.0)
        self.stop()
        raise ServiceError(f"mlflow server not healthy after {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
