"""The image's recipe, read as text (no Docker engine runs here): a wheel built in its own
stage, dependencies from the lock file in a cached layer, a non-root user, `passback` as the
entry point; docker-compose.yml names PostgreSQL, a one-shot migrate, the API and a worker."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PASSBACK_SERVICES = ("migrate", "api", "worker")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what a container listens on


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(arguments.split())))
    return stages


def runtime_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def index_of(stage: list[tuple[str, str]], instruction: str, containing: str) -> int:
    for index, (name, arguments) in enumerate(stage):
        if name == instruction and containing in arguments:
            return index
    raise AssertionError(f"no {instruction} with {containing!r} in {stage}")


def test_the_wheel_is_built_in_its_own_stage_from_the_package_alone() -> None:
    build, *_ = dockerfile_stages()
    assert len(dockerfile_stages()) >= 2
    assert build[0][1].endswith(" AS build")
    wheel = build[index_of(build, "RUN", "pip wheel")][1]
    assert "--no-deps" in wheel
    for name, arguments in build:
        if name == "COPY":
            assert (ROOT / arguments.split()[0]).exists(), arguments


def test_dependencies_come_from_the_lock_file_in_a_layer_before_the_code() -> None:
    stage = runtime_stage()
    copy_lock = index_of(stage, "COPY", "requirements.lock")
    install_locked = index_of(stage, "RUN", "-r /tmp/requirements.lock")
    copy_wheel = index_of(stage, "COPY", "--from=build")
    install_wheel = index_of(stage, "RUN", ".whl")
    assert copy_lock < install_locked < copy_wheel < install_wheel
    assert "--require-hashes" in stage[install_locked][1]
    assert "--no-deps" in stage[install_wheel][1]
    assert all("-e " not in arguments for name, arguments in stage if name == "RUN")
    # Nothing of the code is copied before the dependencies are installed.
    assert [arguments for name, arguments in stage[:install_locked] if name == "COPY"] == [
        "requirements.lock /tmp/requirements.lock"
    ]


def test_the_image_runs_as_a_non_root_user_owning_the_var_dir() -> None:
    stage = runtime_stage()
    env = " ".join(arguments for name, arguments in stage if name == "ENV")
    var_dir = re.search(r"PASSBACK_VAR_DIR=(\S+)", env)
    assert var_dir is not None
    user = stage[index_of(stage, "USER", "")][1]
    assert user not in ("root", "0")
    created = stage[index_of(stage, "RUN", "useradd")][1]
    assert f"--home-dir {var_dir.group(1)} --create-home {user}" in created
    assert index_of(stage, "USER", "") < index_of(stage, "ENTRYPOINT", "")


def test_passback_is_the_entry_point_and_serve_the_default_command() -> None:
    stage = runtime_stage()
    entrypoint = json.loads(stage[index_of(stage, "ENTRYPOINT", "")][1])
    command = json.loads(stage[index_of(stage, "CMD", "")][1])
    assert entrypoint == ["passback"]
    assert command == ["serve", "--host", ALL_INTERFACES, "--port", "8000"]


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", ".env", "tests"} <= ignored


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def test_compose_runs_postgresql_a_one_shot_migrate_the_api_and_a_worker(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", *PASSBACK_SERVICES}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    api = services["api"]["command"]
    assert api[0] == "serve" and "--no-workers" in api and ALL_INTERFACES in api
    assert services["worker"]["command"][0] == "worker"
    for name in PASSBACK_SERVICES:
        assert services[name]["build"] == "."
        assert services[name]["image"] == services["api"]["image"]


def test_compose_starts_each_service_only_once_what_it_needs_is_ready(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["postgres"]["condition"] == "service_healthy"
    for name in ("postgres", "api", "worker"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])


def test_compose_gives_every_passback_service_the_database_and_required_secrets(
    compose: dict[str, Any],
) -> None:
    for name in PASSBACK_SERVICES:
        environment = compose["services"][name]["environment"]
        assert environment["PASSBACK_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in environment["PASSBACK_DATABASE_URL"]
        for required in ("PASSBACK_API_KEYS", "PASSBACK_KEY_ENCRYPTION_KEY"):
            assert environment[required].startswith(f"${{{required}:?"), required


def lock_text() -> str:
    return (ROOT / "requirements.lock").read_text()


def locked_versions() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock_text(), flags=re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def test_the_lock_file_pins_every_declared_dependency_with_hashes() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    locked = locked_versions()
    for line in declared:
        requirement = Requirement(line)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in locked, f"{name} is not in requirements.lock: regenerate it (README)"
        assert requirement.specifier.contains(locked[name], prereleases=True), (name, locked[name])
    hashed = re.findall(r"^\S+==\S+ \\\n\s+--hash=sha256:", lock_text(), flags=re.MULTILINE)
    assert len(hashed) == len(locked)
