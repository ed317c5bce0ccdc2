"""The tool's signing keys live in the database, sealed, shared by every instance (SPEC §5)."""

from __future__ import annotations

import asyncio
import base64
import secrets
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from app.config import Settings
from app.context import AppContext
from app.lti.http import trust_store
from app.lti.keys import ToolKey, ToolKeyring
from app.store.models import ToolKeyRecord
from app.store.tool_keys import unseal
from app.tool_keys import (
    DEVELOPMENT_KEK_FILE,
    ToolKeysError,
    key_encryption_key,
    load_keys,
    refresh_keyring,
    rotate_keys,
)


async def another_instance(settings: Settings, var_dir: Path, **changes: object) -> AppContext:
    """A second instance on the same database, with its own var_dir (no key files there)."""
    context = AppContext.build(
        settings.model_copy(update={"var_dir": var_dir, "tool_key_dir": None, **changes})
    )
    await context.load_tool_keys()
    return context


async def rotate(context: AppContext, new_key: ToolKey) -> list[ToolKey]:
    return await rotate_keys(
        context.sessions,
        key_encryption_key(context.settings),
        keys_dir=context.settings.keys_dir,
        now=context.clock(),
        make_key=lambda: new_key,
    )


async def stored_keys(context: AppContext) -> list[ToolKeyRecord]:
    async with context.sessions() as session:
        return list(await session.scalars(select(ToolKeyRecord).order_by(ToolKeyRecord.id)))


async def test_first_start_imports_the_key_files_of_the_key_folder(
    context: AppContext, tool_keys_dir: Path
) -> None:
    from_files = ToolKeyring.load(tool_keys_dir, generate=False)
    assert context.keyring.current.kid == from_files.current.kid
    assert [row.kid for row in await stored_keys(context)] == [from_files.current.kid]


async def test_private_keys_are_stored_sealed_with_the_key_encryption_key(
    context: AppContext,
) -> None:
    (row,) = await stored_keys(context)
    assert b"PRIVATE KEY" not in row.sealed_private_key
    assert context.keyring.current.private_pem() not in row.sealed_private_key
    pem = unseal(key_encryption_key(context.settings), row.kid, row.sealed_private_key)
    assert ToolKey.from_pem(pem).kid == row.kid


async def test_another_instance_signs_with_the_same_key_and_publishes_the_same_jwks(
    context: AppContext, tmp_path: Path
) -> None:
    other = await another_instance(context.settings, tmp_path / "other")
    try:
        assert other.keyring.current.kid == context.keyring.current.kid
        assert other.keyring.jwks() == context.keyring.jwks()
    finally:
        await other.close()


async def test_a_process_parses_a_key_once_and_loads_the_trusted_certificates_once(
    context: AppContext, tmp_path: Path
) -> None:
    """Each costs tens of milliseconds, and the start-up check, the instance and every test's
    context used to pay it again."""
    other = await another_instance(context.settings, tmp_path / "other")
    try:
        assert other.keyring.current is context.keyring.current
    finally:
        await other.close()
    assert trust_store() is trust_store()


async def test_a_database_without_keys_or_key_files_gets_one_key_for_everyone(
    context: AppContext, tmp_path: Path, spare_tool_keys: tuple[ToolKey, ...]
) -> None:
    async with context.sessions() as session:
        await session.execute(ToolKeyRecord.__table__.delete())
        await session.commit()
    kek = key_encryption_key(context.settings)
    made = iter(spare_tool_keys)
    for _ in range(2):  # the first call writes the key, the second finds it
        keys = await load_keys(
            context.sessions,
            kek,
            keys_dir=tmp_path / "none",
            now=context.clock(),
            make_key=made.__next__,
        )
        assert [key.kid for key in keys] == [spare_tool_keys[0].kid]


async def test_an_unreadable_key_file_to_import_stops_with_one_line_naming_it(
    context: AppContext, tmp_path: Path
) -> None:
    async with context.sessions() as session:
        await session.execute(ToolKeyRecord.__table__.delete())
        await session.commit()
    folder = tmp_path / "old-keys"
    folder.mkdir()
    (folder / "tool-20240101T000000000000.pem").write_text("not a key\n")
    with pytest.raises(ToolKeysError) as refused:
        await another_instance(context.settings, tmp_path / "other", tool_key_dir=folder)
    assert "tool-20240101T000000000000.pem" in str(refused.value)
    assert "\n" not in str(refused.value)


async def test_rotation_makes_a_new_current_key_and_keeps_only_the_previous_one_published(
    context: AppContext, spare_tool_keys: tuple[ToolKey, ...]
) -> None:
    original = context.keyring.current.kid
    second, third = spare_tool_keys[:2]
    assert [key.kid for key in await rotate(context, second)] == [second.kid, original]
    assert [key.kid for key in await rotate(context, third)] == [third.kid, second.kid]


async def test_a_rotation_elsewhere_reaches_a_running_instance_at_its_next_refresh(
    context: AppContext, tmp_path: Path, spare_tool_keys: tuple[ToolKey, ...]
) -> None:
    original = context.keyring.current.kid
    other = await another_instance(
        context.settings, tmp_path / "other", tool_key_refresh_seconds=0.05
    )
    try:
        other.follow_tool_keys()
        await rotate(context, spare_tool_keys[0])
        for _ in range(200):
            if other.keyring.current.kid == spare_tool_keys[0].kid:
                break
            await asyncio.sleep(0.02)
        assert other.keyring.kids == (spare_tool_keys[0].kid, original)
    finally:
        await other.close()


async def test_the_jwks_endpoint_publishes_current_and_previous_after_a_rotation(
    context: AppContext, client: httpx.AsyncClient, spare_tool_keys: tuple[ToolKey, ...]
) -> None:
    original = context.keyring.current.kid
    await rotate(context, spare_tool_keys[0])
    assert await refresh_keyring(
        context.keyring, context.sessions, key_encryption_key(context.settings)
    )
    response = await client.get("/.well-known/jwks.json")
    assert [key["kid"] for key in response.json()["keys"]] == [spare_tool_keys[0].kid, original]


async def test_another_key_encryption_key_stops_with_one_line_naming_the_setting(
    context: AppContext, tmp_path: Path
) -> None:
    wrong = SecretStr(base64.b64encode(secrets.token_bytes(32)).decode())
    with pytest.raises(ToolKeysError) as refused:
        await another_instance(context.settings, tmp_path / "other", key_encryption_key=wrong)
    message = str(refused.value)
    assert "PASSBACK_KEY_ENCRYPTION_KEY" in message
    assert "\n" not in message


def test_outside_development_a_missing_key_encryption_key_is_refused(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    with pytest.raises(ToolKeysError, match="PASSBACK_KEY_ENCRYPTION_KEY is not set"):
        key_encryption_key(settings)
    assert not (tmp_path / DEVELOPMENT_KEK_FILE).exists()


def test_development_mode_keeps_its_key_encryption_key_in_var_dir_readable_by_owner_only(
    tmp_path: Path,
) -> None:
    settings = Settings(var_dir=tmp_path / "var", dev_mode=True)
    first = key_encryption_key(settings)
    path = tmp_path / "var" / DEVELOPMENT_KEK_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(first) == 32
    assert key_encryption_key(settings) == first


async def test_with_an_operator_key_file_the_database_holds_no_key(
    context: AppContext, tmp_path: Path, spare_tool_keys: tuple[ToolKey, ...]
) -> None:
    key_file = tmp_path / "operator.pem"
    key_file.write_bytes(spare_tool_keys[0].private_pem())
    async with context.sessions() as session:
        await session.execute(ToolKeyRecord.__table__.delete())
        await session.commit()
    other = await another_instance(context.settings, tmp_path / "other", tool_key_file=key_file)
    try:
        assert other.keyring.current.kid == spare_tool_keys[0].kid
        assert await stored_keys(context) == []
    finally:
        await other.close()
