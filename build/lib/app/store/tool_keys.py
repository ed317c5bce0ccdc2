"""The tool's signing keys at rest: rows of `tool_keys`, private keys sealed with AES-256-GCM.

The key-encryption key (32 bytes, `PASSBACK_KEY_ENCRYPTION_KEY`) never reaches the database.
Each PEM is sealed with a fresh 96-bit nonce and its row's `kid` as associated data, so a
sealed key copied into another row does not open, and a wrong key-encryption key is detected
(GCM's tag) instead of yielding garbage. Layout: version byte | nonce | ciphertext and tag.
"""

from __future__ import annotations

import os
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import ToolKeyRecord

SEAL_VERSION = b"\x01"
NONCE_BYTES = 12
# pg_advisory_xact_lock key for "the first keys of this database are being written"
# (an arbitrary constant of ours: b"pbkeys" as an integer).
FIRST_KEYS_LOCK = 0x7062_6B65_7973


class SealedKeyError(Exception):
    """A sealed key did not open: another key-encryption key, or a damaged row."""


def seal(key_encryption_key: bytes, kid: str, private_pem: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return (
        SEAL_VERSION + nonce + AESGCM(key_encryption_key).encrypt(nonce, private_pem, kid.encode())
    )


def unseal(key_encryption_key: bytes, kid: str, sealed: bytes) -> bytes:
    if sealed[:1] != SEAL_VERSION:
        raise SealedKeyError(f"tool key {kid}: unknown format")
    nonce, ciphertext = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
    try:
        return AESGCM(key_encryption_key).decrypt(nonce, ciphertext, kid.encode())
    except InvalidTag as exc:
        raise SealedKeyError(f"tool key {kid} does not open with this key") from exc


async def newest_keys(session: AsyncSession, limit: int) -> list[ToolKeyRecord]:
    rows = await session.scalars(
        select(ToolKeyRecord).order_by(ToolKeyRecord.id.desc()).limit(limit)
    )
    return list(rows)


async def newest_kids(session: AsyncSession, limit: int) -> list[str]:
    rows = await session.scalars(
        select(ToolKeyRecord.kid).order_by(ToolKeyRecord.id.desc()).limit(limit)
    )
    return list(rows)


async def add_key(session: AsyncSession, kid: str, sealed: bytes, now: datetime) -> None:
    session.add(ToolKeyRecord(kid=kid, sealed_private_key=sealed, created_at=now))
    await session.flush()


async def lock_for_first_keys(session: AsyncSession) -> None:
    """On PostgreSQL, wait until no other instance is writing a database's first keys (held to
    the end of the transaction). SQLite serialises writers by itself."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_KEYS_LOCK})
