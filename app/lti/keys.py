"""The tool's RSA keys: the current one signs client assertions; the previous one stays published.

Every instance holds one `ToolKeyring`. Its keys come from the database (app.tool_keys: shared
by all instances, so they sign with the same key and publish the same JWKS), or from
`PASSBACK_TOOL_KEY_FILE` when the operator manages the key. The keyring is swapped in place when
another instance rotates, so whoever holds it (the token cache, the JWKS endpoint) sees the new
keys at once. Key files (one PEM each, named so that the newest sorts last) are what earlier
releases kept in `var/keys`; they are imported into the database on its first start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

from app.files import write_private_file

KEY_PREFIX = "tool-"
KEY_BITS = 2048
PUBLISHED_PREVIOUS_KEYS = 1


class ToolKeysNotLoadedError(RuntimeError):
    """The keyring was used before its keys were read."""


@dataclass(frozen=True)
class ToolKey:
    kid: str
    key: RSAKey

    @classmethod
    def from_rsa(cls, key: RSAKey) -> ToolKey:
        if not key.is_private:
            raise ValueError("a tool key must hold a private key")
        return cls(kid=key.thumbprint(), key=key)

    @classmethod
    def from_pem(cls, pem: bytes) -> ToolKey:
        return _parsed(pem)

    def private_pem(self) -> bytes:
        return self.key.as_pem(private=True)

    def public_jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=False), "kid": self.kid, "alg": "RS256", "use": "sig"}


@lru_cache(maxsize=8)
def _parsed(pem: bytes) -> ToolKey:
    """A PEM's key, parsed once per process (about 50 ms of RSA checks each time): the start-up
    check and the instance open the same keys, and so does every instance context in tests."""
    return ToolKey.from_rsa(RSAKey.import_key(pem))


def generate_key() -> ToolKey:
    """A new 2048-bit RSA key (tens of milliseconds)."""
    return ToolKey.from_rsa(RSAKey.generate_key(KEY_BITS))


def _load(path: Path) -> ToolKey:
    try:
        return ToolKey.from_pem(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path} holds no private key") from exc


def key_files(keys_dir: Path) -> list[Path]:
    """The PEM files of a key folder, oldest first."""
    if not keys_dir.is_dir():
        return []
    return sorted(keys_dir.glob(f"{KEY_PREFIX}*.pem"))


def keys_in_folder(keys_dir: Path) -> list[ToolKey]:
    """The keys of a key folder, oldest first (the last one was current)."""
    return [_load(path) for path in key_files(keys_dir)]


def write_new_key(keys_dir: Path, now: datetime | None = None) -> Path:
    """Generate a 2048-bit RSA key into `keys_dir` (mode 0600) and return its path."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")
    path = keys_dir / f"{KEY_PREFIX}{stamp}.pem"
    write_private_file(path, generate_key().private_pem())
    return path


class ToolKeyring:
    """The keys one instance signs with (`current`) and publishes (`current` + `previous`)."""

    def __init__(self, current: ToolKey | None = None, previous: Sequence[ToolKey] = ()) -> None:
        self._current = current
        self._previous = tuple(previous)

    @property
    def loaded(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> ToolKey:
        if self._current is None:
            raise ToolKeysNotLoadedError("the tool keys have not been loaded")
        return self._current

    @property
    def previous(self) -> tuple[ToolKey, ...]:
        return self._previous

    @property
    def kids(self) -> tuple[str, ...]:
        """The published key ids, current first."""
        return tuple(key.kid for key in self.published())

    def published(self) -> tuple[ToolKey, ...]:
        return () if self._current is None else (self._current, *self._previous)

    def replace(self, newest_first: Sequence[ToolKey]) -> None:
        """Adopt a new set of keys: the first signs, the next ones stay published."""
        if not newest_first:
            raise ValueError("a keyring needs a current key")
        self._current = newest_first[0]
        self._previous = tuple(newest_first[1 : 1 + PUBLISHED_PREVIOUS_KEYS])

    @classmethod
    def load(
        cls, keys_dir: Path, *, key_file: Path | None = None, generate: bool = True
    ) -> ToolKeyring:
        """Read the keys from files: `key_file` (or the folder's newest) is current, the
        folder's others are previous. With `generate`, create a first key when there is none."""
        files = key_files(keys_dir)
        if key_file is not None:
            current = _load(key_file)
            older = [path for path in files if path.resolve() != key_file.resolve()]
        else:
            if not files:
                if not generate:
                    raise FileNotFoundError(f"no tool key in {keys_dir}")
                files = [write_new_key(keys_dir)]
            current = _load(files[-1])
            older = files[:-1]
        previous = [_load(path) for path in older[::-1][:PUBLISHED_PREVIOUS_KEYS]]
        return cls(current, previous)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": [key.public_jwk() for key in self.published()]}
