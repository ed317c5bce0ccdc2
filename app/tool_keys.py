"""The tool's signing keys, shared by every instance through the database.

The newest key signs; the one before it stays published, so a platform that cached the JWKS
before a rotation still verifies. On a database's first start the PEM files an earlier release
kept in `var/keys` (`PASSBACK_TOOL_KEY_DIR`) are imported, or else a first key is generated.
Private keys are sealed with the key-encryption key (app.store.tool_keys). With
`PASSBACK_TOOL_KEY_FILE` the operator manages the key instead, and the database holds none.
"""

from __future__ import annotations

import contextlib
import secrets
from base64 import urlsafe_b64encode
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import utc_now
from app.config import KEY_ENCRYPTION_KEY_BYTES, Settings, decode_key_encryption_key
from app.files import write_private_file
from app.lti.keys import (
    PUBLISHED_PREVIOUS_KEYS,
    ToolKey,
    ToolKeyring,
    generate_key,
    keys_in_folder,
)
from app.store import tool_keys as store
from app.store.db import create_engine, create_session_factory, transaction
from app.store.models import ToolKeyRecord

DEVELOPMENT_KEK_FILE = "key-encryption-key"
PUBLISHED_KEYS = 1 + PUBLISHED_PREVIOUS_KEYS

KeyMaker = Callable[[], ToolKey]


class ToolKeysError(Exception):
    """The tool keys cannot be had; the message is one line for the operator."""


def key_encryption_key(settings: Settings) -> bytes:
    """The configured key-encryption key; in development mode, one kept in var_dir (0600)."""
    if settings.key_encryption_key is not None:
        return decode_key_encryption_key(settings.key_encryption_key.get_secret_value())
    if not settings.dev_mode:
        raise ToolKeysError(settings.refusal_to_sign() or "no key-encryption key")
    return _development_key_encryption_key(settings.var_dir / DEVELOPMENT_KEK_FILE)


def _development_key_encryption_key(path: Path) -> bytes:
    if not path.exists():
        encoded = urlsafe_b64encode(secrets.token_bytes(KEY_ENCRYPTION_KEY_BYTES))
        with contextlib.suppress(FileExistsError):  # another process made it first
            write_private_file(path, encoded + b"\n")
    try:
        return decode_key_encryption_key(path.read_text())
    except ValueError as exc:
        raise ToolKeysError(f"{path}: the development key-encryption key {exc}") from exc


def _open(rows: Sequence[ToolKeyRecord], kek: bytes) -> list[ToolKey]:
    keys = []
    for row in rows:
        try:
            keys.append(ToolKey.from_pem(store.unseal(kek, row.kid, row.sealed_private_key)))
        except store.SealedKeyError as exc:
            raise ToolKeysError(
                f"PASSBACK_KEY_ENCRYPTION_KEY does not open the tool keys in the database ({exc}):"
                " it is not the key they were encrypted with"
            ) from exc
    return keys


async def _add(session: AsyncSession, kek: bytes, keys: Sequence[ToolKey], now: datetime) -> None:
    for key in keys:
        await store.add_key(session, key.kid, store.seal(kek, key.kid, key.private_pem()), now)


async def _first_keys(
    sessions: async_sessionmaker[AsyncSession],
    kek: bytes,
    keys_dir: Path,
    now: datetime,
    make_key: KeyMaker,
) -> None:
    """Write a database's first keys (those of `keys_dir`, else a new one), unless another
    instance did so first."""
    try:
        found = keys_in_folder(keys_dir)
    except (OSError, ValueError) as exc:
        raise ToolKeysError(f"cannot import the tool keys of {keys_dir}: {exc}") from exc
    imported = {key.kid: key for key in found}  # oldest first, deduplicated
    try:
        async with transaction(sessions) as session:
            await store.lock_for_first_keys(session)
            if await store.newest_kids(session, 1):
                return
            await _add(session, kek, list(imported.values()) or [make_key()], now)
    except IntegrityError:  # SQLite: another instance imported the same files at once
        return


async def load_keys(
    sessions: async_sessionmaker[AsyncSession],
    kek: bytes,
    *,
    keys_dir: Path,
    now: datetime,
    make_key: KeyMaker = generate_key,
) -> list[ToolKey]:
    """The published keys, newest (current) first; a database without keys gets its first."""
    async with sessions() as session:
        rows = await store.newest_keys(session, PUBLISHED_KEYS)
    if not rows:
        await _first_keys(sessions, kek, keys_dir, now, make_key)
        async with sessions() as session:
            rows = await store.newest_keys(session, PUBLISHED_KEYS)
    return _open(rows, kek)


async def refresh_keyring(
    keyring: ToolKeyring, sessions: async_sessionmaker[AsyncSession], kek: bytes
) -> bool:
    """Adopt the database's keys when they changed (a rotation by another instance)."""
    async with sessions() as session:
        kids = await store.newest_kids(session, PUBLISHED_KEYS)
        if not kids or tuple(kids) == keyring.kids:
            return False
        rows = await store.newest_keys(session, PUBLISHED_KEYS)
    keyring.replace(_open(rows, kek))
    return True


async def rotate_keys(
    sessions: async_sessionmaker[AsyncSession],
    kek: bytes,
    *,
    keys_dir: Path,
    now: datetime,
    make_key: KeyMaker = generate_key,
) -> list[ToolKey]:
    """Make a new current key; the old current stays published. Returns the published keys."""
    await load_keys(sessions, kek, keys_dir=keys_dir, now=now, make_key=make_key)
    async with transaction(sessions) as session:
        await _add(session, kek, [make_key()], now)
    return await load_keys(sessions, kek, keys_dir=keys_dir, now=now, make_key=make_key)


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a one-connection engine, for the command line and the start-up check."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


async def prepare_tool_keys(settings: Settings) -> list[ToolKey]:
    """What an instance will sign with, read (or first written) before it starts serving, so a
    missing or wrong key-encryption key stops the start with one line."""
    if settings.tool_key_file is not None:
        keyring = ToolKeyring.load(settings.keys_dir, key_file=settings.tool_key_file)
        return list(keyring.published())
    kek = key_encryption_key(settings)
    async with _database(settings) as sessions:
        return await load_keys(sessions, kek, keys_dir=settings.keys_dir, now=utc_now())


async def rotate_tool_keys(settings: Settings, make_key: KeyMaker = generate_key) -> list[ToolKey]:
    """`passback keys rotate`: a new current key in the database, for every instance."""
    if settings.tool_key_file is not None:
        raise ToolKeysError(
            "PASSBACK_TOOL_KEY_FILE is set, so the operator manages the key: point it at a new "
            "PEM and keep the old one in PASSBACK_TOOL_KEY_DIR until every instance uses the new"
        )
    kek = key_encryption_key(settings)
    async with _database(settings) as sessions:
        return await rotate_keys(
            sessions, kek, keys_dir=settings.keys_dir, now=utc_now(), make_key=make_key
        )
