"""The `passback` command: serve, worker, migrate, keys, platforms."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Coroutine
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from app.config import ApiKeySetting, Settings, describe_settings_error
from app.logs import configure_logging
from app.lti.keys import ToolKey
from app.store.migrate import upgrade_to_head
from app.tool_keys import ToolKeysError, prepare_tool_keys, rotate_tool_keys

cli = typer.Typer(help="passback: Formative → Canvas grade passback over LTI 1.3 AGS.")
keys_cli = typer.Typer(help="The tool's signing keys.")
platforms_cli = typer.Typer(help="Platform registrations.")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(platforms_cli, name="platforms")

DEV_KEY_FILE = "dev-api-key"


def _refuse(message: str) -> NoReturn:
    """Stop with one line naming the problem (no traceback) and a non-zero exit."""
    typer.echo(f"passback: {message}", err=True)
    raise typer.Exit(2)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        _refuse(describe_settings_error(exc))


def _tool_keys(settings: Settings) -> list[ToolKey]:
    """The keys this instance will sign with (current first), or a one-line refusal."""
    try:
        return asyncio.run(prepare_tool_keys(settings))
    except ToolKeysError as exc:
        _refuse(str(exc))


def development_api_key(settings: Settings) -> str:
    """A key with every scope, kept in var/ so it survives restarts (development only)."""
    path = settings.var_dir / DEV_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    key = "dev-" + secrets.token_urlsafe(24)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _with_development_key(settings: Settings) -> tuple[Settings, str | None]:
    if settings.api_keys:
        return settings, None
    key = development_api_key(settings)
    developer = ApiKeySetting.model_validate(
        {"name": "development", "key": key, "scopes": ["events", "passback", "admin"]}
    )
    return settings.model_copy(update={"api_keys": [developer]}), key


@cli.command()
def migrate() -> None:
    """Bring the database schema to the newest revision (alembic upgrade head)."""
    settings = _settings()
    upgrade_to_head(settings.database_url)
    typer.echo("database schema is at head")


def _run_server(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived server on uvloop where it is installed (uvicorn[standard] brings it on
    Linux and macOS), as uvicorn's own command line does and as bench/ measures; else on
    asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover (Windows)
        asyncio.run(main)
        return
    uvloop.run(main)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 8000,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Also run the Canvas-compatible sandbox platform.")
    ] = False,
    workers: Annotated[bool, typer.Option(help="Run delivery workers in this process.")] = True,
) -> None:
    """Run the API (and, by default, delivery workers) after migrating the database."""
    settings = _settings()
    if refusal := settings.refusal_to_serve():
        _refuse(refusal)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    upgrade_to_head(settings.database_url)
    _tool_keys(settings)
    settings, dev_key = _with_development_key(settings)
    settings = settings.model_copy(update={"run_workers": workers})
    from app.serve import run_service

    _run_server(run_service(settings, host=host, port=port, sandbox=sandbox, dev_key=dev_key))


@cli.command()
def worker(
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve /metrics and /healthz on this port (default: no HTTP at all).",
            envvar="PASSBACK_WORKER_METRICS_PORT",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Interface of the metrics port (0.0.0.0 in a container).")
    ] = "127.0.0.1",
) -> None:
    """Run delivery workers only (no HTTP API), so API and workers scale separately."""
    settings = _settings()
    if refusal := settings.refusal_to_sign():
        _refuse(refusal)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    _tool_keys(settings)
    from app.serve import run_workers_only

    _run_server(run_workers_only(settings, metrics_host=metrics_host, metrics_port=metrics_port))


@cli.command()
def demo(
    api: Annotated[str, typer.Option(help="The running service.")] = "http://127.0.0.1:8000",
    sandbox_url: Annotated[str, typer.Option(help="Its sandbox Canvas.")] = "http://127.0.0.1:8001",
    api_key: Annotated[
        str | None, typer.Option(help="An API key with every scope (default: var/dev-api-key).")
    ] = None,
) -> None:
    """Pass three grades end to end: launches, submissions, and the sandbox gradebook."""
    from app.demo import run_demo

    key = api_key or development_api_key(_settings())
    results = asyncio.run(run_demo(api, sandbox_url, key))
    for result in results:
        typer.echo(
            f"{result.student:<14} Formative {result.percent:<6} job {result.job_status:<10}"
            f" Canvas score {result.canvas_score} / 10"
        )


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Make a new current signing key for every instance; the old one stays published."""
    settings = _settings()
    try:
        current, *previous = asyncio.run(rotate_tool_keys(settings))
    except ToolKeysError as exc:
        _refuse(str(exc))
    typer.echo(f"current key: {current.kid}")
    for key in previous:
        typer.echo(f"still published: {key.kid}")
    typer.echo(
        f"running instances sign with it within {settings.tool_key_refresh_seconds:g} s"
        " (PASSBACK_TOOL_KEY_REFRESH_SECONDS)"
    )


@keys_cli.command("show")
def keys_show() -> None:
    """Print the public JWKS (what /.well-known/jwks.json serves)."""
    keys = _tool_keys(_settings())
    typer.echo(json.dumps({"keys": [key.public_jwk() for key in keys]}, indent=2))


@platforms_cli.command("add")
def platforms_add(
    issuer: Annotated[str, typer.Option()],
    client_id: Annotated[str, typer.Option()],
    deployment_id: Annotated[list[str], typer.Option()],
    token_url: Annotated[str, typer.Option()],
    jwks_url: Annotated[str, typer.Option()],
    allowed_host: Annotated[list[str] | None, typer.Option()] = None,
    token_audience: Annotated[str | None, typer.Option()] = None,
    label: Annotated[str, typer.Option()] = "",
) -> None:
    """Register a platform directly in the database."""
    from app.registry import register_platform_from_cli

    body: dict[str, Any] = {
        "issuer": issuer,
        "client_id": client_id,
        "deployment_ids": deployment_id,
        "token_url": token_url,
        "jwks_url": jwks_url,
        "allowed_hosts": allowed_host or None,
        "token_audience": token_audience,
        "label": label,
    }
    try:
        platform = asyncio.run(register_platform_from_cli(_settings(), body))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(platform, indent=2, default=str))


@platforms_cli.command("list")
def platforms_list() -> None:
    """List registered platforms."""
    from app.registry import list_platforms_from_cli

    rows = asyncio.run(list_platforms_from_cli(_settings()))
    typer.echo(json.dumps(rows, indent=2, default=str))


def main() -> None:
    cli(prog_name="passback")


if __name__ == "__main__":
    main()
