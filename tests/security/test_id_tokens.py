"""Forged launch id_tokens, beyond the sandbox's ready-made forgeries (tests/api covers those):
key-confusion variants, keys smuggled in the header, claims bent under a genuine signature,
and one Canvas's key speaking for another. Each is refused with 422 and leaves no launch;
no URL named in a token is ever fetched."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy import func, select

from app.context import AppContext
from app.sandbox.jose import generate_rsa_key, rsa_public_jwk, sign_hs256, sign_rs256
from app.store.models import Launch
from app.store.retention import prune
from tests.reliability.remote import EVENTS, RemoteClass, seed_class
from tests.security.attacker import (
    RecordingServer,
    genuine_claims,
    platform_signed,
    public_jwk_of,
    recording_server,
)
from tests.support.sandbox import RunningSandbox, run_sandbox

PROBLEM = "application/problem+json"


@pytest.fixture
async def room(
    client: httpx.AsyncClient, sandbox: RunningSandbox, tool_keys_dir: Path
) -> RemoteClass:
    return await seed_class(client, sandbox, tool_keys_dir, students=1)


@pytest.fixture
async def attacker() -> AsyncIterator[RecordingServer]:
    attacker_key = generate_rsa_key()
    async with recording_server({"keys": [rsa_public_jwk(attacker_key.public_key())]}) as server:
        server.key = attacker_key  # type: ignore[attr-defined]
        yield server


async def launches_kept(context: AppContext) -> int:
    async with context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Launch)) or 0)


async def post_launch(client: httpx.AsyncClient, room: RemoteClass, token: str) -> httpx.Response:
    body = {**room.launch_body(room.learners[0]), "id_token": token}
    return await client.post("/v1/launches", json=body, headers=EVENTS)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_with_other_algorithm(room: RemoteClass, claims: dict[str, Any], alg: str) -> str:
    """The platform's own key, but RS512 or PS256 instead of RS256."""
    state = room.sandbox.state
    header = {"typ": "JWT", "alg": alg, "kid": state.platform_kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if alg == "RS512":
        signature = state.platform_key.sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA512()
        )
    else:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        signature = state.platform_key.sign(signing_input.encode(), pss, hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def unsigned(claims: dict[str, Any], alg: str, kid: str) -> str:
    header = {"typ": "JWT", "alg": alg, "kid": kid}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


Forgery = Callable[[RemoteClass, dict[str, Any], RecordingServer], str]


def _public_der(room: RemoteClass) -> bytes:
    return room.sandbox.state.platform_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


HEADER_AND_ALGORITHM_FORGERIES: dict[str, Forgery] = {
    "alg None (capitalised)": lambda room, claims, _: unsigned(
        claims, "None", room.sandbox.state.platform_kid
    ),
    "alg NONE": lambda room, claims, _: unsigned(claims, "NONE", room.sandbox.state.platform_kid),
    "RS512 with the platform key": lambda room, claims, _: signed_with_other_algorithm(
        room, claims, "RS512"
    ),
    "PS256 with the platform key": lambda room, claims, _: signed_with_other_algorithm(
        room, claims, "PS256"
    ),
    "HS256 keyed with the public JWK": lambda room, claims, _: sign_hs256(
        claims,
        json.dumps(public_jwk_of(room)).encode(),
        header={"kid": room.sandbox.state.platform_kid},
    ),
    "HS256 keyed with the public key DER": lambda room, claims, _: sign_hs256(
        claims, _public_der(room), header={"kid": room.sandbox.state.platform_kid}
    ),
    "jku naming the attacker's key set": lambda _room, claims, attacker: sign_rs256(
        claims,
        attacker.key,  # type: ignore[attr-defined]
        kid=rsa_public_jwk(attacker.key.public_key())["kid"],  # type: ignore[attr-defined]
        header={"jku": f"{attacker.base_url}/jwks.json"},
    ),
    "x5u naming the attacker's certificate": lambda _room, claims, attacker: sign_rs256(
        claims,
        attacker.key,  # type: ignore[attr-defined]
        kid="attacker",
        header={"x5u": f"{attacker.base_url}/cert.pem"},
    ),
    "the attacker's key embedded as jwk": lambda _room, claims, attacker: sign_rs256(
        claims,
        attacker.key,  # type: ignore[attr-defined]
        kid=rsa_public_jwk(attacker.key.public_key())["kid"],  # type: ignore[attr-defined]
        header={"jwk": rsa_public_jwk(attacker.key.public_key())},  # type: ignore[attr-defined]
    ),
    "the attacker's key under the platform's kid, with jku": lambda room, claims, attacker: (
        sign_rs256(
            claims,
            attacker.key,  # type: ignore[attr-defined]
            kid=room.sandbox.state.platform_kid,
            header={"jku": f"{attacker.base_url}/jwks.json"},
        )
    ),
    "an unknown critical header": lambda room, claims, _: platform_signed(
        room, claims, crit=["urn:example:must-understand"], **{"urn:example:must-understand": 1}
    ),
}


@pytest.mark.parametrize("forgery", list(HEADER_AND_ALGORITHM_FORGERIES))
async def test_forged_signatures_and_smuggled_keys_are_refused_and_never_fetched(
    client: httpx.AsyncClient,
    context: AppContext,
    room: RemoteClass,
    attacker: RecordingServer,
    forgery: str,
) -> None:
    claims = genuine_claims(room, room.learners[0])
    token = HEADER_AND_ALGORITHM_FORGERIES[forgery](room, claims, attacker)

    response = await post_launch(client, room, token)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert await launches_kept(context) == 0
    assert attacker.requests == []


def _without(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda claims: {key: value for key, value in claims.items() if key != name}


def _with(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda claims: {**claims, **changes}


NOW = int(time.time())
DEPLOYMENT = "https://purl.imsglobal.org/spec/lti/claim/deployment_id"
CLAIM_FORGERIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "no exp": _without("exp"),
    "exp as text": _with(exp=str(NOW + 600)),
    "expired a day ago": _with(iat=NOW - 86_500, exp=NOW - 86_400),
    "no nonce": _without("nonce"),
    "exp NaN": _with(exp=float("nan")),
    "exp infinite": _with(exp=float("inf")),
    "exp 1e308": _with(exp=1e308),
    "exp beyond year 9999": _with(exp=253_402_300_800),
    "exp negative": _with(exp=-1, iat=-100),
    "iat NaN": _with(iat=float("nan")),
    "iat -infinity": _with(iat=float("-inf")),
    "iat 1e308 in the past": _with(iat=-1e308),
    "not valid before tomorrow": _with(nbf=NOW + 86_400),
    "no sub": _without("sub"),
    "no deployment": _without(DEPLOYMENT),
    "issuer with a trailing slash": lambda claims: {**claims, "iss": claims["iss"] + "/"},
    "two audiences, the other one authorized": lambda claims: {
        **claims,
        "aud": [claims["aud"], "another-tool"],
        "azp": "another-tool",
    },
    "two audiences, no authorized party": lambda claims: {
        **{k: v for k, v in claims.items() if k != "azp"},
        "aud": [claims["aud"], "another-tool"],
    },
}


@pytest.mark.parametrize("forgery", list(CLAIM_FORGERIES))
async def test_bent_claims_under_a_genuine_signature_are_refused(
    client: httpx.AsyncClient, context: AppContext, room: RemoteClass, forgery: str
) -> None:
    genuine = genuine_claims(room, room.learners[0])
    accepted = await post_launch(client, room, platform_signed(room, genuine))
    assert accepted.status_code == 201, accepted.text  # the same token, unbent, is fine
    kept = await launches_kept(context)

    response = await post_launch(
        client, room, platform_signed(room, CLAIM_FORGERIES[forgery](genuine))
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert await launches_kept(context) == kept


async def test_one_canvas_cannot_sign_launches_for_another(
    client: httpx.AsyncClient,
    context: AppContext,
    room: RemoteClass,
    sandbox: RunningSandbox,
    tool_keys_dir: Path,
) -> None:
    """Two registered platforms; a token claiming to come from the second, signed with the
    first's key (under either platform's kid), is refused."""
    async with run_sandbox() as other_canvas:
        other = await seed_class(client, other_canvas, tool_keys_dir, students=1)
        claims = genuine_claims(other, other.learners[0])
        first = sandbox.state
        under_own_kid = sign_rs256(claims, first.platform_key, kid=first.platform_kid)
        under_their_kid = sign_rs256(
            claims, first.platform_key, kid=other_canvas.state.platform_kid
        )
        for token in (under_own_kid, under_their_kid):
            response = await post_launch(client, other, token)
            assert response.status_code == 422, response.text
            assert response.json()["code"] in ("unknown_signing_key", "invalid_signature")
        assert await launches_kept(context) == 0
        genuine = platform_signed(other, claims)
        assert (await post_launch(client, other, genuine)).status_code == 201


AGS_ENDPOINT = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
UNCALLABLE_URLS: dict[str, Callable[[str], str]] = {
    "a port beyond 65535": lambda url: url.replace(
        url.split("/")[2], url.split("/")[2].split(":")[0] + ":99999", 1
    ),
    "a newline in the authority": lambda url: url.replace("://", "://canvas\n.", 1),
    "a tab in the authority": lambda url: url.replace("://", "://canvas\t.", 1),
    "a space in the authority": lambda url: url.replace("://", "://canvas .", 1),
    "a trailing tab": lambda url: url + "\t",
    "a trailing newline": lambda url: url + "\n",
}


@pytest.mark.parametrize("which", ["lineitem", "lineitems"])
@pytest.mark.parametrize("bent", list(UNCALLABLE_URLS))
async def test_a_launch_whose_ags_url_no_client_could_call_is_refused(
    client: httpx.AsyncClient, context: AppContext, room: RemoteClass, bent: str, which: str
) -> None:
    """Signed by the platform, but naming a line item httpx would refuse (or quote into
    another URL) when delivering: refused at launch with 422, not a 500, nothing kept."""
    claims = genuine_claims(room, room.learners[0])
    endpoint = claims[AGS_ENDPOINT]
    claims[AGS_ENDPOINT] = {**endpoint, which: UNCALLABLE_URLS[bent](endpoint[which])}

    response = await post_launch(client, room, platform_signed(room, claims))

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["code"] == "invalid_id_token"
    assert await launches_kept(context) == 0


async def test_one_id_token_binds_one_student(
    client: httpx.AsyncClient, context: AppContext, sandbox: RunningSandbox, tool_keys_dir: Path
) -> None:
    """The same token posted for another Formative student is refused (409, a code); posted
    again for the same student it is recorded again, idempotently."""
    room = await seed_class(client, sandbox, tool_keys_dir, students=2)
    first, second = room.learners
    body = room.launch_body(first)

    recorded = await client.post("/v1/launches", json=body, headers=EVENTS)
    again = await client.post("/v1/launches", json=body, headers=EVENTS)
    borrowed = await client.post(
        "/v1/launches", json={**body, "student_id": second.student_id}, headers=EVENTS
    )

    assert (recorded.status_code, again.status_code) == (201, 201), again.text
    assert again.json()["id"] == recorded.json()["id"]
    assert borrowed.status_code == 409, borrowed.text
    assert borrowed.headers["content-type"].startswith(PROBLEM)
    assert borrowed.json()["code"] == "id_token_reused"
    assert await launches_kept(context) == 1
    # The second student's own launch (another token) is recorded as usual.
    own = await client.post("/v1/launches", json=room.launch_body(second), headers=EVENTS)
    assert own.status_code == 201, own.text


async def test_concurrent_posts_of_one_id_token_for_two_students_bind_one(
    client: httpx.AsyncClient, context: AppContext, sandbox: RunningSandbox, tool_keys_dir: Path
) -> None:
    room = await seed_class(client, sandbox, tool_keys_dir, students=2)
    body = room.launch_body(room.learners[0])
    bodies = [body, {**body, "student_id": room.learners[1].student_id}] * 3

    answers = await asyncio.gather(
        *(client.post("/v1/launches", json=one, headers=EVENTS) for one in bodies)
    )

    winners = {
        one["student_id"] for one, a in zip(bodies, answers, strict=True) if a.status_code == 201
    }
    assert len(winners) == 1
    assert sorted({a.status_code for a in answers}) == [201, 409]
    assert await launches_kept(context) == 1


async def test_expired_id_tokens_are_forgotten_by_retention(
    client: httpx.AsyncClient, context: AppContext, room: RemoteClass
) -> None:
    token = platform_signed(room, genuine_claims(room, room.learners[0]))
    recorded = await post_launch(client, room, token)
    assert recorded.status_code == 201, recorded.text

    kept = await prune(context.sessions, older_than=datetime.now(UTC))
    forgotten = await prune(context.sessions, older_than=datetime.now(UTC) + timedelta(days=1))

    assert (kept.used_id_tokens, forgotten.used_id_tokens) == (0, 1)
