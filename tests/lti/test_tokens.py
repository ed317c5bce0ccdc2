"""Access tokens: one per registration and scope set, shared, refreshed in time, errors kept."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from app.lti.ags import AgsError
from app.lti.assertion import client_assertion
from app.lti.tokens import DELIVERY_SCOPES, SCOPE_LINEITEM_READONLY, TokenError
from app.sandbox import tokens as sandbox_tokens
from app.sandbox.state import SandboxState
from app.store.db import transaction
from tests.lti.world import World


async def test_hundreds_of_concurrent_requests_share_one_token(world: World) -> None:
    tokens = await asyncio.gather(
        *(world.context.tokens.get(world.platform, DELIVERY_SCOPES) for _ in range(300))
    )
    assert len({token.value for token in tokens}) == 1
    assert world.context.tokens.requests_made == 1
    assert await world.sandbox.admin.token_grants(world.client_id) == 1


async def test_a_token_is_reused_until_shortly_before_it_expires(world: World) -> None:
    first = await world.context.tokens.get(world.platform, DELIVERY_SCOPES)
    world.clock.advance(3000)
    assert await world.context.tokens.get(world.platform, DELIVERY_SCOPES) == first
    world.clock.advance(400)  # 3400 s of 3600: inside the refresh margin
    second = await world.context.tokens.get(world.platform, DELIVERY_SCOPES)
    assert second != first
    assert await world.sandbox.admin.token_grants(world.client_id) == 2


async def test_each_scope_set_has_its_own_token(world: World) -> None:
    await world.context.tokens.get(world.platform, DELIVERY_SCOPES)
    await world.context.tokens.get(world.platform, reversed(DELIVERY_SCOPES))
    await world.context.tokens.get(world.platform, [SCOPE_LINEITEM_READONLY])
    assert world.context.tokens.requests_made == 2


async def test_a_token_the_platform_rejects_is_replaced_once_for_everyone(world: World) -> None:
    await world.context.tokens.get(world.platform, DELIVERY_SCOPES)
    # Canvas stops accepting tokens it issued (its signing secret changed).
    world.sandbox.state.access_token_secret = secrets.token_bytes(32)
    items = await asyncio.gather(
        *(world.context.ags.read_line_item(world.platform, world.line_item_url) for _ in range(50))
    )
    assert {item.points for item in items} == {10}
    assert await world.sandbox.admin.token_grants(world.client_id) == 2
    reads = await world.sandbox.admin.requests(path_contains="/line_items", method="GET")
    assert sum(1 for read in reads if read["status"] == 401) == 50


async def test_a_token_rejected_twice_fails_as_rejected_access(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    issue = sandbox_tokens.issue_access_token

    def issue_unusable(state: SandboxState, **fields: Any) -> str:
        token = issue(state, **fields)
        return token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    # The sandbox Canvas now hands out tokens its own AGS endpoints refuse.
    monkeypatch.setattr(sandbox_tokens, "issue_access_token", issue_unusable)
    with pytest.raises(AgsError) as raised:
        await world.context.ags.read_line_item(world.platform, world.line_item_url)
    assert raised.value.code == "access_token_rejected"
    assert raised.value.outcome.message == "Access token invalid - signature likely incorrect"
    assert await world.sandbox.admin.token_grants(world.client_id) == 2


async def test_an_inactive_developer_key_fails_with_canvas_words(world: World) -> None:
    await world.sandbox.admin.update_developer_key(world.client_id, active=False)
    with pytest.raises(TokenError) as raised:
        await world.context.tokens.get(world.platform, DELIVERY_SCOPES)
    assert raised.value.outcome.code == "developer_key_inactive"
    assert raised.value.outcome.message == "invalid_client: unknown client"
    # A refusal is remembered for a moment: a queue of jobs does not hammer the endpoint.
    with pytest.raises(TokenError):
        await world.context.tokens.get(world.platform, DELIVERY_SCOPES)
    assert world.context.tokens.requests_made == 1


async def test_scopes_missing_from_the_key_fail_as_not_granted(world: World) -> None:
    await world.sandbox.admin.update_developer_key(
        world.client_id, scopes=[SCOPE_LINEITEM_READONLY]
    )
    with pytest.raises(TokenError) as raised:
        await world.context.tokens.get(world.platform, DELIVERY_SCOPES)
    assert raised.value.outcome.code == "scope_not_granted"
    assert "were requested, but not granted" in (raised.value.outcome.message or "")


async def test_a_wrong_audience_fails_as_a_rejected_assertion(world: World) -> None:
    async with transaction(world.context.sessions) as session:
        platform = await session.merge(world.platform)
        platform.token_audience = "https://canvas.example.edu/login/oauth2/token"
    with pytest.raises(TokenError) as raised:
        await world.context.tokens.get(platform, DELIVERY_SCOPES)
    assert raised.value.outcome.code == "client_assertion_rejected"
    assert raised.value.outcome.message == "invalid_request: the 'aud' is invalid"


async def test_the_client_assertion_names_the_key_and_the_client(world: World) -> None:
    key = world.context.keyring.current
    now = world.clock()
    first = client_assertion(key, client_id="1000", audience="https://c/token", now=now)
    second = client_assertion(key, client_id="1000", audience="https://c/token", now=now)
    public = RSAKey.import_key(key.public_jwk())
    token = jwt.decode(first, public, algorithms=["RS256"])
    assert token.header["kid"] == key.kid
    assert token.header["alg"] == "RS256"
    claims = token.claims
    assert claims["iss"] == claims["sub"] == "1000"
    assert claims["aud"] == "https://c/token"
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert claims["jti"] != jwt.decode(second, public).claims["jti"]
