"""Fixtures: the loopback sandbox Canvas and a world seeded in it (see tests/lti/world.py)."""

from __future__ import annotations

from tests.lti.world import engine, lti_context, lti_settings, world  # noqa: F401  (fixtures)
from tests.support.sandbox import (  # noqa: F401  (fixtures)
    sandbox_fixture,
    sandbox_server_fixture,
)
