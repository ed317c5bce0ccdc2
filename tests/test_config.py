"""Settings: defaults that follow PASSBACK_VAR_DIR, and values that cannot work refused early."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings, decode_key_encryption_key, describe_settings_error


def test_the_default_sqlite_database_lives_in_var_dir(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "state")
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'state' / 'passback.db'}"


def test_a_database_url_in_settings_wins_over_the_default(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1/passback"
    assert Settings(var_dir=tmp_path, database_url=url).database_url == url


def test_a_sha256_of_64_characters_that_are_not_hex_is_refused_naming_the_setting() -> None:
    keys = [{"name": "ci", "sha256": "g" * 64, "scopes": ["admin"]}]
    with pytest.raises(ValidationError) as refused:
        Settings(api_keys=keys)
    assert describe_settings_error(refused.value) == (
        "invalid setting PASSBACK_API_KEYS: API key 'ci': 'sha256' must be 64 hex digits"
    )


def test_a_database_url_error_does_not_repeat_the_url() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(database_url="mysql://user:hunter2@db/passback")
    assert "hunter2" not in describe_settings_error(refused.value)


@pytest.mark.parametrize(
    "encoded",
    [
        "q4lIHRbXHNhy9jZvv6xC7ggJfuDFsh1A9rvNqRVqMF8=",  # openssl rand -base64 32
        "-_-_HRbXHNhy9jZvv6xC7ggJfuDFsh1A9rvNqRVqMF8=",  # URL-safe alphabet (Fernet's keys)
    ],
)
def test_a_key_encryption_key_is_32_bytes_in_either_base64_alphabet(encoded: str) -> None:
    assert len(decode_key_encryption_key(encoded)) == 32


@pytest.mark.parametrize("encoded", ["", "not base64!", "c2hvcnQ="])
def test_a_key_encryption_key_that_is_not_32_bytes_of_base64_is_refused(encoded: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        decode_key_encryption_key(encoded)
