"""The few JOSE operations a Canvas-like platform needs, on `cryptography` alone.

Compact JWS parsing, RS256/HS256 signing and verification, RSA JWKs and their RFC 7638
thumbprints. Written out here (rather than borrowed from the service's own JWT library) so
the sandbox is an independent implementation, and so tests can forge the malformed tokens
(``alg: none``, HS256 keyed with a public key) a general-purpose library refuses to make.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class JoseError(ValueError):
    """A token or key that cannot be parsed."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise JoseError("invalid base64url") from exc


def _json_segment(value: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class CompactJws:
    """A parsed but unverified compact JWS."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str | None:
        alg = self.header.get("alg")
        return alg if isinstance(alg, str) else None

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def parse_compact(token: str) -> CompactJws:
    """Split and decode a compact JWS; raises JoseError unless it has JSON-object parts."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JoseError("not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise JoseError("undecodable JWS segment") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JoseError("JWS header and payload must be JSON objects")
    signature = b64url_decode(parts[2])
    return CompactJws(header, claims, f"{parts[0]}.{parts[1]}".encode(), signature)


def sign_rs256(
    claims: Mapping[str, Any],
    private_key: rsa.RSAPrivateKey,
    *,
    kid: str | None = None,
    header: Mapping[str, Any] | None = None,
) -> str:
    full_header: dict[str, Any] = {"typ": "JWT", "alg": "RS256"}
    if kid is not None:
        full_header["kid"] = kid
    full_header.update(header or {})
    signing_input = f"{_json_segment(full_header)}.{_json_segment(claims)}"
    signature = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url_encode(signature)}"


def sign_hs256(
    claims: Mapping[str, Any], secret: bytes, *, header: Mapping[str, Any] | None = None
) -> str:
    full_header: dict[str, Any] = {"typ": "JWT", "alg": "HS256", **(header or {})}
    signing_input = f"{_json_segment(full_header)}.{_json_segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(signature)}"


def encode_unsigned(claims: Mapping[str, Any], *, header: Mapping[str, Any] | None = None) -> str:
    """An ``alg: none`` token (empty signature), for forged-token tests."""
    full_header: dict[str, Any] = {"typ": "JWT", "alg": "none", **(header or {})}
    return f"{_json_segment(full_header)}.{_json_segment(claims)}."


def verify_rs256(jws: CompactJws, public_key: rsa.RSAPublicKey) -> bool:
    try:
        public_key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def verify_hs256(jws: CompactJws, secret: bytes) -> bool:
    expected = hmac.new(secret, jws.signing_input, hashlib.sha256).digest()
    return hmac.compare_digest(expected, jws.signature)


def _int_to_b64(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def rsa_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of an RSA public key (base64url)."""
    numbers = public_key.public_numbers()
    canonical = json.dumps(
        {"e": _int_to_b64(numbers.e), "kty": "RSA", "n": _int_to_b64(numbers.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def rsa_public_jwk(public_key: rsa.RSAPublicKey, *, kid: str | None = None) -> dict[str, str]:
    """The public JWK of an RSA key, ``kid`` defaulting to its RFC 7638 thumbprint."""
    numbers = public_key.public_numbers()
    return {
        "kty": "RSA",
        "e": _int_to_b64(numbers.e),
        "n": _int_to_b64(numbers.n),
        "alg": "RS256",
        "use": "sig",
        "kid": kid if kid is not None else rsa_thumbprint(public_key),
    }


def rsa_public_key_from_jwk(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    if jwk.get("kty") != "RSA":
        raise JoseError("not an RSA JWK")
    n, e = jwk.get("n"), jwk.get("e")
    if not isinstance(n, str) or not isinstance(e, str):
        raise JoseError("RSA JWK lacks n or e")
    try:
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(b64url_decode(e), "big"), int.from_bytes(b64url_decode(n), "big")
        )
        return numbers.public_key()
    except ValueError as exc:
        raise JoseError("invalid RSA JWK") from exc


def generate_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def load_rsa_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise JoseError("not an RSA private key")
    return key


def public_key_pem(public_key: rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
