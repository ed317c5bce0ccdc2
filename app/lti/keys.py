"""The tool's RSA keys: the current one signs client assertions; the previous one stays published.

Keys live as PEM files in one folder (`var/keys` by default), named so that the newest sorts
last. `passback keys rotate` adds a new file; the JWKS publishes the current key and the one
before it, so a platform that cached the old key keeps verifying during the change-over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

from app.files import write_private_file

KEY_PREFIX = "tool-"
PUBLISHED_PREVIOUS_KEYS = 1


@dataclass(frozen=True)
class ToolKey:
    kid: str
    key: RSAKey

    def public_jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=False), "kid": self.kid, "alg": "RS256", "use": "sig"}


def _load(path: Path) -> ToolKey:
    key = RSAKey.import_key(path.read_bytes())
    if not key.is_private:
        raise ValueError(f"{path} holds no private key")
    return ToolKey(kid=key.thumbprint(), key=key)


def _key_files(keys_dir: Path) -> list[Path]:
    if not keys_dir.is_dir():
        return []
    return sorted(keys_dir.glob(f"{KEY_PREFIX}*.pem"))


def write_new_key(keys_dir: Path, now: datetime | None = None) -> Path:
    """Generate a 2048-bit RSA key into `keys_dir` (mode 0600) and return its path."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")
    path = keys_dir / f"{KEY_PREFIX}{stamp}.pem"
    write_private_file(path, RSAKey.generate_key(2048).as_pem(private=True))
    return path


@dataclass(frozen=True)
class ToolKeyring:
    current: ToolKey
    previous: tuple[ToolKey, ...]

    @classmethod
    def load(
        cls, keys_dir: Path, *, key_file: Path | None = None, generate: bool = True
    ) -> ToolKeyring:
        """Read the keys; with `generate`, create a first key when there is none."""
        files = _key_files(keys_dir)
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
        previous = tuple(_load(path) for path in older[::-1][:PUBLISHED_PREVIOUS_KEYS])
        return cls(current=current, previous=previous)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": [key.public_jwk() for key in (self.current, *self.previous)]}


def rotate(keys_dir: Path) -> ToolKeyring:
    """Make a new current key; the old current key stays published as the previous one."""
    write_new_key(keys_dir)
    return ToolKeyring.load(keys_dir, generate=False)
