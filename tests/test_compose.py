"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The file must be valid under the Compose Specification's JSON schema (vendored in tests/data/), and
honest: its commands are real subcommands, its images are pinned, its environment names are settings
the service reads, and the topics it creates are the ones the settings name.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator

from consumer.config import Settings
from tests.support import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
SPEC = ROOT / "tests" / "data" / "compose-spec.json"
APP_SERVICES = ("migrate", "worker", "relay", "api")
LONG_RUNNING = ("postgres", "kafka", "worker", "relay", "api")
ONE_SHOT = ("kafka-init", "db-init", "migrate", "db-grants", "clients-init")
SECURITY_DOC = ROOT / "docs" / "security.md"
# Read by consumer.migrate straight from the environment, not through Settings.
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}|(?P<bare>\w+))")


def interpolate(text: str) -> str:
    """Compose's interpolation with an empty environment: every variable must have a default."""

    def value(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["default"] is None:
            raise AssertionError(f"{match[0]} has no default: the file must work with no .env")
        return match["default"]

    return _VARIABLE.sub(value, text)


@cache
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE_FILE.read_text()))
    return document


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def test_the_file_is_valid_under_the_compose_specification() -> None:
    validator = Draft7Validator(json.loads(SPEC.read_text()))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_the_validation_is_not_vacuous() -> None:
    validator = Draft7Validator(json.loads(SPEC.read_text()))
    broken = {"services": {"api": {"image": "x:1", "depends_on": {"db": {"condition": "when_ready"}}}}}
    assert not validator.is_valid(broken)
    assert not validator.is_valid({"services": {"api": {"restart_policy": "always"}}})


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_run_real_identity_subcommands(service: str) -> None:
    command = services()[service]["command"]
    assert command[0] == "identity"
    result = subprocess.run(
        [sys.executable, "-m", "consumer", *command[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_the_dockerfile_default_command_is_real() -> None:
    (cmd,) = re.findall(r"^CMD (.+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    argv = json.loads(cmd)
    assert argv[:2] == ["identity", "api"]
    result = subprocess.run(
        [sys.executable, "-m", "consumer", *argv[1:], "--help"], capture_output=True, cwd=ROOT
    )
    assert result.returncode == 0


def test_images_are_pinned() -> None:
    pulled = {name: s["image"] for name, s in services().items() if "build" not in s}
    assert set(pulled) == {"postgres", "kafka", "kafka-init", "db-init", "db-grants"}
    for name, image in pulled.items():
        repository, _, tag = image.partition(":")
        assert tag, f"{name}: {image} is not pinned"
        assert tag != "latest", f"{name}: {image} is not pinned"
        if repository == "apache/kafka":
            assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: pin an exact Kafka version"
    assert pulled["kafka"] == pulled["kafka-init"], "the topic tool matches the broker"
    assert pulled["postgres"] == pulled["db-init"] == pulled["db-grants"], "psql matches the server"
    # The build stage compiles the core on the full image; the image itself is the slim one.
    stages = re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert stages == ["python:3.11", "python:3.11-slim"]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_environment_names_are_settings_and_their_values_parse(service: str) -> None:
    environment: dict[str, Any] = services()[service]["environment"]
    fields = {name.upper() for name in Settings.model_fields}
    assert set(environment) <= fields, "every variable is a setting the service reads"
    settings = Settings.model_validate({k.lower(): str(v) for k, v in environment.items()})
    assert settings.kafka_bootstrap_servers == "kafka:19092"
    assert settings.database_url.startswith("postgresql://")
    assert "@postgres:5432/" in settings.database_url


def test_topics_created_are_the_settings_defaults(tmp_path: Path) -> None:
    """Run kafka-init's real script, with a stand-in for kafka-topics.sh that records its arguments."""
    init = services()["kafka-init"]
    (script,) = init["command"]
    recorder = tmp_path / "kafka-topics.sh"
    calls = tmp_path / "calls.txt"
    recorder.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(calls))}\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    assert init["entrypoint"][0] == "/bin/bash"
    subprocess.run(
        [*init["entrypoint"], script.replace("/opt/kafka/bin/kafka-topics.sh", str(recorder))],
        env={"PATH": os.environ["PATH"], **{k: str(v) for k, v in init["environment"].items()}},
        check=True,
        timeout=30,
    )
    created: dict[str, int] = {}
    for line in calls.read_text().splitlines():
        args = line.split()
        assert "--create" in args
        assert "--if-not-exists" in args
        assert args[args.index("--bootstrap-server") + 1] == "kafka:19092"
        created[args[args.index("--topic") + 1]] = int(args[args.index("--partitions") + 1])

    defaults = Settings.model_fields
    expected = {
        defaults[f].default for f in ("checkout_topic", "resolved_topic", "merged_topic", "dlq_topic")
    }
    assert set(created) == expected
    assert created[defaults["checkout_topic"].default] > 1, "several partitions let workers scale out"


def test_app_and_init_agree_on_topic_names() -> None:
    topics = ("CHECKOUT_TOPIC", "RESOLVED_TOPIC", "MERGED_TOPIC", "DLQ_TOPIC")
    init = services()["kafka-init"]["environment"]
    for service in APP_SERVICES:
        assert {t: services()[service]["environment"][t] for t in topics} == {t: init[t] for t in topics}


def test_startup_order_health_checks_and_restart_policies() -> None:
    s = services()

    def waits_for(service: str) -> dict[str, str]:
        return {name: dep["condition"] for name, dep in s[service].get("depends_on", {}).items()}

    assert waits_for("kafka-init") == {"kafka": "service_healthy"}
    assert waits_for("db-init") == {"postgres": "service_healthy"}
    assert waits_for("migrate") == {"db-init": "service_completed_successfully"}
    assert (
        waits_for("db-grants") == waits_for("clients-init") == {"migrate": "service_completed_successfully"}
    )
    for service in ("worker", "relay"):
        assert waits_for(service) == {
            "db-grants": "service_completed_successfully",
            "kafka-init": "service_completed_successfully",
        }
    assert waits_for("api") == {"db-grants": "service_completed_successfully"}
    for service in LONG_RUNNING:
        assert "healthcheck" in s[service], service
        assert s[service]["restart"] == "unless-stopped", service
    for service in ONE_SHOT:
        assert s[service]["restart"] == "on-failure", service
        assert "healthcheck" not in s[service]
    assert "8000" in {str(p).rsplit(":", 1)[-1] for p in s["api"]["ports"]}
    settings = Settings.model_validate({k.lower(): str(v) for k, v in s["api"]["environment"].items()})
    assert (settings.api_host, settings.api_port) == ("0.0.0.0", 8000)
    assert f":{settings.api_port}/readyz" in " ".join(s["api"]["healthcheck"]["test"])


def test_the_image_ships_the_migrations_where_the_services_look() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY sql \./sql$", dockerfile, re.MULTILINE)
    assert re.search(r"^WORKDIR /app$", dockerfile, re.MULTILINE)
    assert "MIGRATIONS_DIR=/app/sql" in dockerfile
    for service in APP_SERVICES:
        assert services()[service]["environment"]["MIGRATIONS_DIR"] == "/app/sql"
    # pyproject's `readme` and setup.py must be in the build context for `pip wheel .`.
    assert re.search(r"^COPY pyproject\.toml setup\.py README\.md \./$", dockerfile, re.MULTILINE)
    assert not any(
        line.strip() in {"sql", "README.md"} for line in (ROOT / ".dockerignore").read_text().splitlines()
    )


def test_the_image_installs_the_locked_hashed_dependencies() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    # The build stage installs the same lock (mypyc type-checks against it), and the image the wheel.
    assert dockerfile.count("pip install --require-hashes --no-deps -r requirements.lock") == 2
    compile_wheel = r"^RUN IDENTITY_COMPILE=1 pip wheel --no-build-isolation --no-deps"
    assert re.search(compile_wheel, dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install --no-deps /wheels/\*\.whl", dockerfile, re.MULTILINE)
    lock = (ROOT / "requirements.lock").read_text()
    locked = {m.lower().replace("_", "-") for m in re.findall(r"^([A-Za-z0-9_.-]+)==", lock, re.MULTILINE)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in locked, f"{name} is not in requirements.lock (make lock)"
    assert all("--hash=sha256:" in block for block in lock.split("==")[1:])


def test_worker_and_relay_health_checks_ask_the_loop_not_the_port() -> None:
    for service in ("worker", "relay"):
        assert services()[service]["healthcheck"]["test"] == ["CMD", "identity", "health", service]


def test_each_service_connects_as_its_own_role_with_the_documented_grants() -> None:
    users = {
        name: urlsplit(services()[name]["environment"]["DATABASE_URL"]).username for name in APP_SERVICES
    }
    assert users == {
        "migrate": "identity_owner",
        "worker": "identity_worker",
        "relay": "identity_relay",
        "api": "identity_api",
    }
    assert services()["postgres"]["environment"]["POSTGRES_USER"] not in users.values()
    assert services()["clients-init"]["environment"]["DATABASE_URL"].startswith(
        "postgresql://identity_owner:"
    )
    (init,) = services()["db-init"]["command"]
    assert set(re.findall(r"identity_\w+", init)) == set(users.values())
    (grants,) = services()["db-grants"]["command"]
    assert services()["db-grants"]["environment"]["PGUSER"] == "identity_owner"
    (documented,) = re.findall(r"```sql\n(-- runtime role grants\n.*?)```", SECURITY_DOC.read_text(), re.S)
    (applied,) = re.findall(r"<<'SQL'\n(.*?)SQL\n", grants, re.S)
    assert applied == documented


@pytest.mark.parametrize(("existing", "created"), [("", True), ("storefront\tidentify,read\n", False)])
def test_clients_init_creates_the_first_client_once(tmp_path: Path, existing: str, created: bool) -> None:
    """Run clients-init's real script with a stand-in `identity` that records its arguments."""
    init = services()["clients-init"]
    (script,) = init["command"]
    calls = tmp_path / "calls.txt"
    stand_in = tmp_path / "identity"
    stand_in.write_text(
        f'#!/bin/sh\necho "$*" >> {shlex.quote(str(calls))}\n'
        f'[ "$2" = list ] && printf {shlex.quote(existing)}\n[ "$2" = create ] && echo idk_key\nexit 0\n'
    )
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    env = {k: str(v) for k, v in init["environment"].items()} | {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    result = subprocess.run(
        [*init["entrypoint"], script], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    expected = ["clients list"] + (["clients create storefront --scopes identify,read"] if created else [])
    assert calls.read_text().splitlines() == expected
    real = subprocess.run(
        [sys.executable, "-m", "consumer", "clients", "create", "--help"], capture_output=True, cwd=ROOT
    )
    assert real.returncode == 0
