"""Every setting is documented where operators look: .env.example and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
# Read by the command line (typer's envvar), not by Settings.
COMMAND_LINE_VARIABLES = {"PASSBACK_WORKER_METRICS_PORT"}
SETTINGS_VARIABLES = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}


def readme_configuration() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Configuration") : readme.index("### Run it as a container")]


def env_example_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#? ?(PASSBACK_[A-Z0-9_]+)=", text, flags=re.MULTILINE))


@pytest.mark.parametrize("variable", sorted(SETTINGS_VARIABLES))
def test_every_setting_is_in_env_example_and_the_readme_table(variable: str) -> None:
    assert variable in env_example_variables(), f"{variable} missing from .env.example"
    assert f"`{variable}`" in readme_configuration(), f"{variable} missing from README"


def test_env_example_names_no_setting_that_does_not_exist() -> None:
    assert env_example_variables() - SETTINGS_VARIABLES <= COMMAND_LINE_VARIABLES


def test_env_example_values_that_are_set_are_valid_settings() -> None:
    """What .env.example sets uncommented (besides placeholders) parses as Settings."""
    text = (ROOT / ".env.example").read_text()
    values = dict(re.findall(r"^(PASSBACK_[A-Z0-9_]+)=(.*)$", text, flags=re.MULTILINE))
    assert values["PASSBACK_KEY_ENCRYPTION_KEY"] == ""  # never a key in the repository
    values = {name: value for name, value in values.items() if value and "<" not in value}
    Settings(**{name.removeprefix(ENV_PREFIX).lower(): value for name, value in values.items()})
