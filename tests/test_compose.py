"""Static checks of docker-compose.yml, the Dockerfile and .dockerignore.

No Docker engine is needed: the files are parsed, not run.
"""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
INTERNAL_SERVICES = ("postgres", "redis", "triton", "migrate")
GATEWAY_ENV = ("DATABASE_URL", "REDIS_URL", "TRITON_URL", "ENVIRONMENT")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, heredocs cut."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"<<'?(\w+)'?(.*?)\n.*?\n\1\n", r"\2\n", text, flags=re.S)
    text = text.replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    pairs = []
    for line in lines:
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            pairs.append((instruction.upper(), args.strip()))
    return pairs


def final_stage(dockerfile: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (ins, _) in enumerate(dockerfile) if ins == "FROM"]
    return dockerfile[starts[-1] :]


def test_the_platform_services_are_all_defined(services: dict[str, Any]) -> None:
    assert set(services) >= {"postgres", "redis", "triton", "migrate", "gateway"}


@pytest.mark.parametrize("name", INTERNAL_SERVICES)
def test_internal_services_publish_no_ports(
    services: dict[str, Any], name: str
) -> None:
    assert "ports" not in services[name]


def test_gateway_publishes_only_its_http_port(services: dict[str, Any]) -> None:
    ports = services["gateway"]["ports"]

    assert len(ports) == 1
    assert str(ports[0]).endswith(":8080:8080")


def test_databases_and_triton_sit_on_an_internal_network(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    assert compose["networks"]["backend"]["internal"] is True
    for name in ("postgres", "redis", "triton"):
        assert services[name]["networks"] == ["backend"]


def test_triton_image_is_official_and_pinned(services: dict[str, Any]) -> None:
    image = services["triton"]["image"]

    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3", image)


@pytest.mark.parametrize("name", ("postgres", "redis"))
def test_database_images_are_pinned_to_a_major_version(
    services: dict[str, Any], name: str
) -> None:
    image = services[name]["image"]

    assert ":" in image and not image.endswith(":latest")


def test_triton_serves_the_repository_read_only(services: dict[str, Any]) -> None:
    triton = services["triton"]

    assert "./model_repository:/models:ro" in triton["volumes"]
    assert "--model-repository=/models" in triton["command"]
    assert any(arg.startswith("--model-control-mode=") for arg in triton["command"])


@pytest.mark.parametrize("name", ("postgres", "redis", "triton"))
def test_dependencies_have_healthchecks(services: dict[str, Any], name: str) -> None:
    assert services[name]["healthcheck"]["test"]


def test_triton_readiness_probe_uses_the_v2_health_endpoint(
    services: dict[str, Any],
) -> None:
    test = " ".join(services["triton"]["healthcheck"]["test"])

    assert "/v2/health/ready" in test


def test_gateway_waits_for_healthy_dependencies_and_migrations(
    services: dict[str, Any],
) -> None:
    depends = services["gateway"]["depends_on"]

    for name in ("postgres", "redis", "triton"):
        assert depends[name]["condition"] == "service_healthy"
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_migrate_runs_the_gateway_image_once(services: dict[str, Any]) -> None:
    migrate, gateway = services["migrate"], services["gateway"]

    assert migrate["command"] == ["python", "-m", "gateway.migrate"]
    assert migrate["image"] == gateway["image"]
    assert migrate["restart"] == "no"
    assert migrate["environment"].items() <= gateway["environment"].items()


def test_gateway_gets_every_connection_setting(services: dict[str, Any]) -> None:
    env = services["gateway"]["environment"]

    assert set(GATEWAY_ENV) <= set(env)
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert env["TRITON_URL"] == "triton:8001"


def test_gateway_reads_the_environment_names_compose_sets(
    services: dict[str, Any],
) -> None:
    config = ROOT / "gateway" / "config.py"
    if not config.exists():
        pytest.skip("gateway/config.py is not there yet")
    source = config.read_text().lower()

    for name in services["gateway"]["environment"]:
        assert name.lower() in source, f"gateway does not read {name}"


_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} substitution."""

    def substitute(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name}: {rest}")
        return rest if kind == "-" else ""

    return _VARIABLE.sub(substitute, value)


@pytest.mark.parametrize("name", ("migrate", "gateway"))
def test_gateway_settings_accept_the_compose_environment_in_production(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = pytest.importorskip("gateway.config")
    host_env = {
        "POSTGRES_PASSWORD": "s3cret",
        "API_KEYS": "acme:score:" + "ab" * 32,
    }
    for key, value in services[name]["environment"].items():
        monkeypatch.setenv(key, interpolate(str(value), host_env))

    settings = config.Settings()

    assert settings.environment == "production"
    assert settings.database_url == "postgresql://risk:s3cret@postgres:5432/risk"


def test_compose_refuses_to_start_without_a_postgres_password(
    services: dict[str, Any],
) -> None:
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(services["postgres"]["environment"]["POSTGRES_PASSWORD"], {})


def test_postgres_password_has_no_default(services: dict[str, Any]) -> None:
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]

    assert password.startswith("${POSTGRES_PASSWORD:?")
    assert ":?" in services["gateway"]["environment"]["DATABASE_URL"]


def test_image_has_build_and_runtime_stages(
    dockerfile: list[tuple[str, str]],
) -> None:
    stages = [args for ins, args in dockerfile if ins == "FROM"]

    assert len(stages) >= 2
    assert stages[-1].startswith("${PYTHON_IMAGE}")
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in dockerfile


def test_gateway_image_runs_as_a_non_root_user(
    dockerfile: list[tuple[str, str]],
) -> None:
    users = [args for ins, args in final_stage(dockerfile) if ins == "USER"]

    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_gateway_image_exposes_checks_and_starts_the_gateway(
    dockerfile: list[tuple[str, str]],
) -> None:
    runtime = final_stage(dockerfile)

    assert ("EXPOSE", "8080") in runtime
    assert any(ins == "HEALTHCHECK" for ins, _ in runtime)
    assert ("CMD", '["python", "-m", "gateway"]') in runtime


def test_gateway_image_copies_what_the_gateway_reads(
    dockerfile: list[tuple[str, str]],
) -> None:
    copied = {args.split()[0] for ins, args in final_stage(dockerfile) if ins == "COPY"}

    assert {"features/", "gateway/", "db/", "config/"} <= copied


def test_no_model_framework_is_installed_in_the_image() -> None:
    text = (ROOT / "Dockerfile").read_text().lower()

    for framework in ("torch", "tensorflow", "onnxruntime"):
        assert f"pip install {framework}" not in text
    assert "[train]" not in text and "[triton]" not in text


def test_build_context_is_an_allow_list() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and line[0] != "#"]

    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"pyproject.toml", "features", "gateway", "db", "config"}


def test_compose_refuses_to_start_without_api_keys(services: dict[str, Any]) -> None:
    with pytest.raises(KeyError, match="API_KEYS"):
        interpolate(services["gateway"]["environment"]["API_KEYS"], {})
