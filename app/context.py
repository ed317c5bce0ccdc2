"""What one running instance holds during its lifespan: settings, database, keys, HTTP client.

Built once in `create_app`'s lifespan (or by the CLI) and passed to whoever needs it; there is
no module-level state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.clock import Clock, utc_now
from app.config import Settings
from app.delivery.wakeup import Wakeup
from app.intake.events import EventIntake
from app.lti import http as lti_http
from app.lti.ags import AgsClient
from app.lti.jwks import JwksCache
from app.lti.keys import ToolKeyring
from app.lti.tokens import TokenCache
from app.metrics import Metrics
from app.refresh import Refreshed
from app.store import stats
from app.store.db import create_engine, create_session_factory, schema_revision
from app.tool_keys import key_encryption_key, load_keys, refresh_keyring

log = logging.getLogger("passback.keys")

QUEUE_FIGURES_MAX_AGE_SECONDS = 5.0
"""`/metrics` reads the queue (a GROUP BY over the jobs) at most this often per instance."""
READINESS_MAX_AGE_SECONDS = 1.0
READINESS_TIMEOUT_SECONDS = 3.0
AGS_CONNECTIONS = 256


def new_instance_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def outbound_http_client(settings: Settings, *, max_connections: int = 200) -> httpx.AsyncClient:
    """The client for calls to platforms: the settings' timeouts and answer cap, and
    connections only to public addresses unless the host is an insecure host (app/lti/egress)."""
    return lti_http.outbound_http_client(
        connect_timeout=settings.http_connect_timeout,
        read_timeout=settings.http_read_timeout,
        max_answer_bytes=settings.http_max_answer_bytes,
        max_connections=max_connections,
        insecure_hosts=settings.insecure_hosts,
    )


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    keyring: ToolKeyring
    """The tool's signing keys; empty until `load_tool_keys` (unless from a key file)."""
    http: httpx.AsyncClient
    jwks: JwksCache
    clock: Clock = utc_now
    instance_id: str = field(default_factory=new_instance_id)
    metrics: Metrics = field(default_factory=Metrics)
    extras: dict[str, Any] = field(default_factory=dict)
    wakeup: Wakeup = field(default_factory=Wakeup)
    """Rung after a job is enqueued, so this instance's workers start at once."""
    tokens: TokenCache = field(init=False)
    """Access tokens per (platform, scope set), shared by every delivery and preview."""
    ags_http: lti_http.PlatformHttp = field(init=False)
    """The client for AGS calls, the hot path of delivery (app.lti.http)."""
    ags: AgsClient = field(init=False)
    events: EventIntake = field(init=False)
    """Submission events in, written in batches."""
    _following_keys: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    queue_figures: Refreshed[stats.QueueFigures] = field(init=False)
    """The queue figures of `/metrics`, read at most every few seconds, one read in flight."""
    schema_at: Refreshed[str | None] = field(init=False)
    """`/readyz`'s database check (the schema revision): at most once a second."""

    def __post_init__(self) -> None:
        insecure_hosts = self.settings.insecure_hosts
        self.tokens = TokenCache(
            self.http,
            self.keyring,
            insecure_hosts=insecure_hosts,
            clock=self.clock,
            metrics=self.metrics,
        )
        self.ags_http = lti_http.PlatformHttp(
            connect_timeout=self.settings.http_connect_timeout,
            read_timeout=self.settings.http_read_timeout,
            max_answer_bytes=self.settings.http_max_answer_bytes,
            max_connections=AGS_CONNECTIONS,
            verify=lti_http.trust_store(),
            insecure_hosts=insecure_hosts,
        )
        self.ags = AgsClient(
            self.ags_http, self.tokens, insecure_hosts=insecure_hosts, clock=self.clock
        )
        concurrent_writes = self.engine.dialect.name == "postgresql"
        self.events = EventIntake(
            self.engine,
            clock=self.clock,
            metrics=self.metrics,
            deadline=timedelta(seconds=self.settings.delivery_deadline_seconds),
            max_batch=self.settings.intake_max_batch,
            batches_in_flight=self.settings.intake_batches_in_flight if concurrent_writes else 1,
            overlap_from=self.settings.intake_overlap_from,
        )
        self.queue_figures = Refreshed(self._read_queue, max_age=QUEUE_FIGURES_MAX_AGE_SECONDS)
        self.schema_at = Refreshed(self._read_schema, max_age=READINESS_MAX_AGE_SECONDS)

    async def _read_queue(self) -> stats.QueueFigures:
        async with self.sessions() as session:
            return await stats.queue_figures(session)

    async def _read_schema(self) -> str | None:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            return await schema_revision(self.engine)

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock = utc_now) -> AppContext:
        engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
        http = outbound_http_client(settings)
        keyring = (
            ToolKeyring.load(settings.keys_dir, key_file=settings.tool_key_file)
            if settings.tool_key_file is not None
            else ToolKeyring()  # from the database: load_tool_keys
        )
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            keyring=keyring,
            http=http,
            jwks=JwksCache(http),
            clock=clock,
        )

    async def load_tool_keys(self) -> None:
        """Read the signing keys from the database (a first start imports `var/keys` or makes
        one). Raises ToolKeysError (one line) without a usable key-encryption key."""
        if self.settings.tool_key_file is not None:
            return
        keys = await load_keys(
            self.sessions,
            key_encryption_key(self.settings),
            keys_dir=self.settings.keys_dir,
            now=self.clock(),
        )
        self.keyring.replace(keys)

    def follow_tool_keys(self) -> None:
        """Re-read the keys every `tool_key_refresh_seconds`, so a rotation made through
        another instance is signed with and published here too (until `close`)."""
        if self.settings.tool_key_file is None and self._following_keys is None:
            self._following_keys = asyncio.create_task(self._follow_tool_keys())

    async def _follow_tool_keys(self) -> None:
        kek = key_encryption_key(self.settings)
        while True:
            await asyncio.sleep(self.settings.tool_key_refresh_seconds)
            try:
                if await refresh_keyring(self.keyring, self.sessions, kek):
                    log.info("tool keys changed: signing with %s", self.keyring.current.kid)
            except Exception as exc:  # the database away for a moment: keep the keys we have
                log.warning("cannot re-read the tool keys: %s", exc)

    async def close(self) -> None:
        if self._following_keys is not None:
            self._following_keys.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following_keys
        await self.ags_http.aclose()
        await self.http.aclose()
        await self.engine.dispose()
