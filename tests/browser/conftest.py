"""Browser fixtures: Debian's Chromium driven by Playwright, and `passback serve` (uvicorn,
with its delivery workers) as a subprocess on each database backend, beside the sandbox.

The browser and the service start once per module and backend (about 5 s together on a slow
machine); each test makes its own classroom (the sandbox never repeats an id, so each test's
registration, formative and students are its own) and its own browser context.

Screenshots go to test-output/ (look at them: the tests check layout numbers, not looks).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.support.processes import ServiceProcess, service_on_emptied_database
from tests.support.sandbox import sandbox_fixture, sandbox_server_fixture  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
UI_TIMEOUT_MS = 20_000
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium; skipped where it cannot be had, but a failure under CI."""
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"{CHROMIUM} is missing (scripts/test installs Debian's chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
async def service(
    chromium: Path,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    tool_keys_dir: Path,
) -> AsyncIterator[ServiceProcess]:
    """`passback serve` (API and delivery workers) on an emptied database and a free port."""
    var_dir = tmp_path_factory.mktemp("service")
    async with service_on_emptied_database(
        database_url, var_dir=var_dir, keys_dir=tool_keys_dir
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


NewPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[NewPage]:
    """Another page (its own context, closed after the test), at `width`×`height` (desktop by
    default)."""
    contexts: list[BrowserContext] = []

    async def open_page(width: int = DESKTOP["width"], height: int = DESKTOP["height"]) -> Page:
        context = await browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        opened = await context.new_page()
        opened.set_default_timeout(UI_TIMEOUT_MS)
        return opened

    yield open_page
    for context in contexts:
        await context.close()


@pytest.fixture
async def page(new_page: NewPage) -> Page:
    return await new_page()


@pytest.fixture
async def api(service: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        yield client


async def screenshot(page: Page, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)
