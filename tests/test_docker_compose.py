"""``docker/compose.yaml`` checked without a container engine: services, images and build
contexts, variables, loopback-only ports, volumes, health checks and start order, the tracking
server's wiring, and the worker's command composing against ``stellarexp/conf/``. ``docker-compose config``
runs too where that Debian package is installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.paths import REPO

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; $$ escapes a dollar
COMPOSE_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
RUNTIME_VAR = re.compile(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def interpolate(value, env: dict[str, str]):
    """Compose's variable substitution (enough for this file): ``env``, else the defaults."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env:
            return env[name]
        if op and op.endswith("-"):
            return arg
        raise KeyError(f"{name} is required ({arg}) and not in {ENV_EXAMPLE.name}")

    return COMPOSE_VAR.sub(one, value).replace("$$", "$")


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def test_the_stack_has_its_services(compose):
    services = compose["services"]
    assert {"postgres", "minio", "buckets", "mlflow", "data", "worker"} <= set(services)
    # scalable worker: no fixed container name, no host port a second replica would fight for
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]


def test_every_service_has_an_image_or_an_existing_build_context(compose):
    dockerfile_args = set(re.findall(r"^ARG\s+(\w+)", (DOCKER / "Dockerfile").read_text(),
                                     re.MULTILINE))
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, name
        if "image" in service and "build" not in service:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", service["image"]), \
                f"{name}: pin an image tag ({service['image']})"
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == REPO, name
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), name
            assert set(build.get("args", {})) <= dockerfile_args, name


def test_dockerfile_copies_files_that_exist_and_are_not_ignored():
    text = (DOCKER / "Dockerfile").read_text()
    sources = [src for line in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE)
               for src in line.split()[:-1] if not src.startswith("--")]
    assert sources
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for src in sources:
        assert (REPO / src).exists(), src
        assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), \
            f"{src} is excluded by Dockerfile.dockerignore"


def test_variables_have_defaults_or_are_in_the_env_example(compose, env_example):
    text = COMPOSE.read_text()
    used = {m.group(1): m.group(2) for m in COMPOSE_VAR.finditer(text)}
    assert used
    for name, op in used.items():
        if not (op and op.endswith("-")):  # required or no default
            assert name in env_example, f"${{{name}}} needs a value in {ENV_EXAMPLE.name}"
    build_args = set(re.findall(r"^ARG\s+(\w+)", (DOCKER / "Dockerfile").read_text(), re.MULTILINE))
    stale = set(env_example) - set(used) - build_args
    assert not stale, f"{ENV_EXAMPLE.name} sets variables nothing uses: {sorted(stale)}"
    # secrets have no default in the compose file: a stack never starts with a known password
    for secret in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert used[secret] in (":?", "?"), secret
    interpolate(compose, env_example)  # every reference resolves


def test_runtime_variables_in_commands_are_set_in_the_service(compose):
    for name, service in compose["services"].items():
        env = _environment(service)
        health = " ".join(map(str, (service.get("healthcheck") or {}).get("test", [])))
        for text in (*_command(service), health):
            for var in RUNTIME_VAR.findall(text):
                assert var in env, f"{name}: ${var} in its command is not in its environment"


def test_published_ports_are_loopback_only(compose):
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"
            published += 1
    assert published >= 3  # postgres, minio (API + console), mlflow
    assert "network_mode" not in compose["services"]["mlflow"]


def test_volumes_are_declared_and_bind_mounts_exist(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: bind mount {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared
    # the workers and the one-shot data build share one home
    assert "stellarexp-data:/data" in compose["services"]["worker"]["volumes"]
    assert "stellarexp-data:/data" in compose["services"]["data"]["volumes"]


def test_health_checks_gate_the_start_order(compose):
    services = compose["services"]
    for name in ("postgres", "minio", "mlflow"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} must be a one-shot"
            else:
                pytest.fail(f"{name} -> {dep}: condition {condition}")
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(services["worker"]["depends_on"]) == {"postgres", "mlflow", "data"}


def test_tracking_server_uses_postgres_and_the_object_store(compose, env_example):
    services = interpolate(compose, env_example)["services"]
    mlflow = services["mlflow"]
    cmd = _command(mlflow)
    opt = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    backend = urlsplit(opt["--backend-store-uri"])
    assert backend.scheme == "postgresql" and backend.hostname == "postgres"
    assert backend.path.lstrip("/") == services["postgres"]["environment"]["POSTGRES_DB"]
    assert backend.password == env_example["POSTGRES_PASSWORD"]
    assert opt["--artifacts-destination"].startswith("s3://")
    assert "--no-serve-artifacts" not in cmd  # clients upload through the server
    assert opt["--host"] == "0.0.0.0"  # inside the network; published on loopback only
    internal_port = opt["--port"]
    assert {p.rsplit(":", 1)[1] for p in mlflow["ports"]} == {internal_port}
    allowed = opt["--allowed-hosts"].split(",")
    assert "mlflow" in allowed and f"mlflow:{internal_port}" in allowed
    s3 = urlsplit(_environment(mlflow)["MLFLOW_S3_ENDPOINT_URL"])
    assert s3.hostname == "minio" and s3.port == 9000
    assert _environment(mlflow)["AWS_SECRET_ACCESS_KEY"] == env_example["MINIO_ROOT_PASSWORD"]
    # the bucket the server writes to is the one the one-shot creates
    bucket = urlsplit(opt["--artifacts-destination"]).hostname
    assert _environment(services["buckets"])["MLFLOW_BUCKET"] == bucket


def test_worker_is_the_usual_command_plus_tracking_server_and_postgres_storage(compose,
                                                                               env_example):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from stellarexp.config import register_resolvers
    from stellarexp.home import conf_dir

    services = interpolate(compose, env_example)["services"]
    worker = services["worker"]
    env = _environment(worker)
    tracking = urlsplit(env["MLFLOW_TRACKING_URI"])
    assert tracking.hostname == "mlflow"
    assert str(tracking.port) in _command(services["mlflow"])
    storage = urlsplit(env["OPTUNA_STORAGE"])
    assert storage.scheme == "postgresql" and storage.hostname == "postgres"
    created = re.findall(r"CREATE DATABASE (\w+)", (DOCKER / "postgres/init.sql").read_text())
    assert storage.path.lstrip("/") in created

    # the shell line after variable expansion, as the container runs it
    line = _command(worker)[-1]
    line = re.sub(r"\$\([^)]*\)", "x", line)
    for key, value in env.items():
        line = line.replace(f"${key}", value)
    argv = shlex.split(line)
    assert argv[:5] == ["exec", "python", "-m", "stellarexp.train", "-m"]
    overrides = argv[5:]
    assert "tracking=server" in overrides
    assert f"hydra.sweeper.storage={env['OPTUNA_STORAGE']}" in overrides
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
    assert cfg.tracking.name == "server"
    assert cfg.hydra.sweeper.storage == env["OPTUNA_STORAGE"]
    assert cfg.sweep == "xgboost_color" and cfg.target == "teff"
    # the data service builds what the workers read
    assert _environment(services["data"])["DATA_ARGS"] == env["DATA_ARGS"]


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose not installed (apt-get install docker-compose)")
def test_docker_compose_config_accepts_the_file(tmp_path):
    proc = subprocess.run(["docker-compose", "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE),
                           "config"], capture_output=True, text=True, timeout=120, cwd=DOCKER,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)
    assert set(rendered["services"]) >= {"postgres", "minio", "mlflow", "worker"}
    # without the env file the required passwords stop it with their message
    (tmp_path / "empty.env").write_text("")
    bare = subprocess.run(["docker-compose", "-f", str(COMPOSE), "--env-file",
                           str(tmp_path / "empty.env"), "config"], capture_output=True,
                          text=True, timeout=120, cwd=DOCKER, check=False)
    assert bare.returncode != 0 and "POSTGRES_PASSWORD" in bare.stderr + bare.stdout
