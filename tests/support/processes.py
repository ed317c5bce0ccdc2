"""The service as a real OS process: `passback serve` on a free loopback port.

What an operator runs, started the way an operator starts it (the installed CLI, settings in
`PASSBACK_*` environment variables), so tests can kill it with SIGKILL, restart it, run two
of it against one database, or cut its database off. Its stderr (JSON log lines) and stdout
go to a file the test can read::

    env = service_env(database_url, var_dir=tmp_path, keys_dir=tool_keys_dir)
    service = await start_service(env, log_path=tmp_path / "service.log")
    ...  # httpx against service.base_url
    service.kill()                      # kill -9
    service = await service.restarted() # same port, same settings, same log file (appended)
    await service.terminate()

The sandbox Canvas for these runs is `tests.support.sandbox.run_sandbox` (a thread of the test
process); give the service its URL through the platform registration, as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support import databases
from tests.support.auth import API_KEYS, KEY_ENCRYPTION_KEY, TEACHER_TOKEN_SECRET

PASSBACK = Path(sys.executable).with_name("passback")
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(
    database_url: str,
    *,
    var_dir: Path,
    keys_dir: Path,
    api_keys: list[dict[str, Any]] | None = None,
    **settings: Any,
) -> dict[str, str]:
    """The environment of a test instance: our test keys, loopback allowed over http, and any
    other setting as a keyword (``lease_seconds=3`` → ``PASSBACK_LEASE_SECONDS=3``).

    Inherited `PASSBACK_*` variables are dropped so the developer's shell cannot leak in.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("PASSBACK_")}
    values: dict[str, Any] = {
        "database_url": database_url,
        "var_dir": var_dir,
        "tool_key_dir": keys_dir,
        "key_encryption_key": KEY_ENCRYPTION_KEY,
        "api_keys": json.dumps(api_keys if api_keys is not None else API_KEYS),
        "teacher_token_secret": TEACHER_TOKEN_SECRET,
        "insecure_hosts": "127.0.0.1,localhost",
        "log_json": "true",
    }
    values.update(settings)
    for name, value in values.items():
        env[f"PASSBACK_{name.upper()}"] = str(value)
    return env


@dataclass
class ServiceProcess:
    """One running `passback serve`."""

    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    extra_args: tuple[str, ...] = ()
    cwd: Path | None = None
    starts: int = 1
    _log_handle: Any = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no shutdown hooks, no flushing, no lease hand-back."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self._close_log()

    async def terminate(self) -> int:
        """SIGTERM and wait (a graceful stop), SIGKILL if it takes too long; returns the exit
        code. Waits without blocking the loop: the test's own servers (a TCP proxy) keep
        serving the stopping instance."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            while self.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.running:
                self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self._close_log()
        return self.process.returncode

    async def restarted(self, *, ready_timeout: float = READY_TIMEOUT_SECONDS) -> ServiceProcess:
        """The same service started again (same port, settings and log file); stop it first."""
        if self.running:
            raise RuntimeError("stop the service before restarting it")
        again = await start_service(
            self.env,
            log_path=self.log_path,
            port=self.port,
            extra_args=self.extra_args,
            ready_timeout=ready_timeout,
            cwd=self.cwd,
        )
        again.starts = self.starts + 1
        return again

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def log_holding(self, text: str, *, within: float = 10.0) -> str:
        """The log once `text` is in it (or after `within` seconds): the start-up lines are
        written just after the service starts answering, so a look right after readiness may
        come before them."""
        deadline = asyncio.get_running_loop().time() + within
        while text not in (log := self.log_text()):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        return log

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines, such as the welcome, skipped)."""
        return list(parse_log_lines(self.log_text()))

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


def parse_log_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if isinstance(record, dict):
                    yield record


async def start_service(
    env: dict[str, str],
    *,
    log_path: Path,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    cwd: Path | None = None,
    passback: Path = PASSBACK,
) -> ServiceProcess:
    """Start `passback serve` (in `cwd`, default the test's; `passback` is the command, by
    default the repo's) and return once `/readyz` answers 200 (raises with the log's tail if it
    exits or is not ready in time)."""
    port = port or free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_handle = log_path.open("ab")
    command = [str(passback), "serve", "--host", "127.0.0.1", "--port", str(port), *extra_args]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=log_handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    service = ServiceProcess(
        env, port, log_path, process, extra_args, cwd=cwd, _log_handle=log_handle
    )
    try:
        await wait_ready(service, timeout=ready_timeout)
    except BaseException:
        service.kill()
        raise
    return service


@contextlib.asynccontextmanager
async def service_on_emptied_database(
    database_url: str, *, var_dir: Path, keys_dir: Path, **settings: Any
) -> AsyncIterator[ServiceProcess]:
    """`passback serve` on `database_url` with every table emptied first (its log in
    `var_dir`), stopped gracefully on the way out."""
    engine = create_async_engine(database_url)
    try:
        await databases.empty_all_tables(engine)
    finally:
        await engine.dispose()
    env = service_env(database_url, var_dir=var_dir, keys_dir=keys_dir, **settings)
    running = await start_service(env, log_path=var_dir / "service.log")
    try:
        yield running
    finally:
        await running.terminate()


async def wait_ready(service: ServiceProcess, *, timeout: float = READY_TIMEOUT_SECONDS) -> float:
    """Poll `/readyz` until 200; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    async with httpx.AsyncClient(base_url=service.base_url, timeout=2.0) as client:
        while True:
            if not service.running:
                raise RuntimeError(
                    f"passback serve exited with {service.process.returncode}:\n"
                    + service.log_text()[-4000:]
                )
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return time.monotonic() - started
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"passback serve not ready after {timeout} s:\n" + service.log_text()[-4000:]
                )
            await asyncio.sleep(0.05)
