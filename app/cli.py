"""The `passback` command: serve, worker, migrate, keys, platforms, demo, teacher-token, prune.

A mistake answers with one line naming it and a non-zero exit, never a traceback:
`describe_error` is the one place that turns known exceptions into those lines. `--debug`
(or `PASSBACK_LOG_LEVEL=DEBUG`) shows the traceback instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.config import ApiKeySetting, Settings, describe_settings_error
from app.demo import ServiceAnswerError
from app.development import (
    DEFAULT_TEACHER_TOKEN_TTL_SECONDS,
    NoTeacherTokenSecretError,
    mint_teacher_token,
    teacher_page_url,
    teacher_token_secret,
    with_development_teacher_secret,
)
from app.files import write_private_file
from app.logs import configure_logging
from app.lti.keys import ToolKey
from app.store.migrate import upgrade_to_head
from app.tool_keys import ToolKeysError, prepare_tool_keys, rotate_tool_keys

# Plain click help (no rich panels): flags show no `<bool>`, and `--debug` tracebacks are
# Python's own, without rich's dump of local variables (settings hold secrets).
_TYPER_OPTIONS: dict[str, Any] = {"rich_markup_mode": None, "pretty_exceptions_enable": False}
cli = typer.Typer(
    help="passback: Formative → Canvas grade passback over LTI 1.3 AGS.", **_TYPER_OPTIONS
)
keys_cli = typer.Typer(help="The tool's signing keys.", **_TYPER_OPTIONS)
platforms_cli = typer.Typer(help="Platform registrations.", **_TYPER_OPTIONS)
cli.add_typer(keys_cli, name="keys")
cli.add_typer(platforms_cli, name="platforms")

DEV_KEY_FILE = "dev-api-key"


def _refuse(message: str) -> NoReturn:
    """Stop with one line naming the problem (no traceback) and a non-zero exit, in the same
    form as the errors `main` turns into lines (`describe_error`)."""
    typer.echo(f"passback: {message}", err=True)
    raise typer.Exit(2)


@cli.callback()
def _global_options(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the full traceback of an error instead of one line."),
    ] = False,
) -> None:
    """passback: Formative → Canvas grade passback over LTI 1.3 AGS."""
    # Read by main() from the arguments (an error may come before or after this runs).


def _settings() -> Settings:
    return Settings()  # a setting that cannot work: one line by describe_error


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
    key = "dev-" + secrets.token_urlsafe(24)
    write_private_file(path, (key + "\n").encode())
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
    if settings.dev_mode:  # teacher tokens of `passback teacher-token` work without a setting
        settings = with_development_teacher_secret(settings)
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
    from app.demo import DemoResult, run_demo

    settings = _settings()
    key = api_key or _existing_development_key(settings)

    def show(result: DemoResult) -> None:
        typer.echo(
            f"{result.student:<14} Formative {result.percent:<6} job {result.job_status:<10}"
            f" Canvas score {result.canvas_score} / 10"
        )

    run = asyncio.run(run_demo(api, sandbox_url, key, on_result=show))
    typer.echo(f"sandbox gradebook of the demo course: {run.gradebook_url}")
    try:
        secret = teacher_token_secret(settings)
    except NoTeacherTokenSecretError:
        typer.echo(
            f"teacher page: passback teacher-token --teacher {run.teacher_id}"
            f" --formative {run.formative_id} --base-url {api} (with the service's"
            " PASSBACK_TEACHER_TOKEN_SECRET) prints its link"
        )
        return
    token = mint_teacher_token(
        secret,
        run.teacher_id,
        audience=settings.teacher_token_audience,
        formative_id=run.formative_id,
    )
    typer.echo(f"teacher page of its formative: {teacher_page_url(api, run.formative_id, token)}")


def _existing_development_key(settings: Settings) -> str:
    path = settings.var_dir / DEV_KEY_FILE
    if not path.exists():
        raise NoApiKeyError(
            f"no API key: pass --api-key, or start the service with scripts/start "
            f"(it keeps a development key in {path})"
        )
    return path.read_text().strip()


class NoApiKeyError(Exception):
    """The demo has no API key to call the service with."""


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Make a new current signing key for every instance; the old one stays published."""
    settings = _settings()
    _require_migrated(settings)
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
    settings = _settings()
    _require_migrated(settings)
    keys = _tool_keys(settings)
    typer.echo(json.dumps({"keys": [key.public_jwk() for key in keys]}, indent=2))


@platforms_cli.command("add")
def platforms_add(
    issuer: Annotated[str, typer.Option(help="The platform's issuer (`iss` of its launches).")],
    client_id: Annotated[
        str, typer.Option(help="The tool's client id on the platform (Canvas developer key id).")
    ],
    deployment_id: Annotated[
        list[str], typer.Option(help="A deployment id of the tool (repeat for several).")
    ],
    token_url: Annotated[str, typer.Option(help="The platform's OAuth2 token endpoint.")],
    jwks_url: Annotated[str, typer.Option(help="The platform's public keys, to verify launches.")],
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A host pattern AGS and token URLs may use, e.g. *.instructure.com "
            "(repeat for several; default: the token URL's host)."
        ),
    ] = None,
    token_audience: Annotated[
        str | None,
        typer.Option(help="The `aud` of client assertions (default: the token URL)."),
    ] = None,
    label: Annotated[str, typer.Option(help="A name for operators.")] = "",
) -> None:
    """Register a platform directly in the database."""
    from app.registry import register_platform_from_cli

    _require_migrated(_settings())

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
        typer.echo(f"passback: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(platform, indent=2, default=str))


@platforms_cli.command("invite")
def platforms_invite(
    label: Annotated[
        str,
        typer.Option(help="Name of the platform registration it makes (default: the platform's)."),
    ] = "",
    ttl: Annotated[
        str, typer.Option(help="How long the link works: seconds, or a number with m, h or d.")
    ] = "24h",
) -> None:
    """Make a single-use Dynamic Registration link for a platform admin to paste."""
    from app.install import NotConfiguredError, create_invite_from_cli, parse_duration

    settings = _settings()
    _require_migrated(settings)
    try:
        url, expires_at = asyncio.run(
            create_invite_from_cli(settings, label=label, ttl=parse_duration(ttl))
        )
    except (ValueError, NotConfiguredError) as exc:
        typer.echo(f"passback: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(url)
    typer.echo(f"single use, valid until {expires_at.isoformat(timespec='seconds')}", err=True)


@platforms_cli.command("list")
def platforms_list() -> None:
    """List registered platforms."""
    from app.registry import list_platforms_from_cli

    settings = _settings()
    _require_migrated(settings)
    rows = asyncio.run(list_platforms_from_cli(settings))
    typer.echo(json.dumps(rows, indent=2, default=str))


@cli.command("teacher-token")
def teacher_token(
    teacher: Annotated[str, typer.Option(help="The teacher's Formative id (the token's `sub`).")],
    formative: Annotated[
        str | None,
        typer.Option(help="Also print the teacher page of this formative, token included."),
    ] = None,
    ttl: Annotated[
        int, typer.Option(min=60, help="Seconds the token is valid.")
    ] = DEFAULT_TEACHER_TOKEN_TTL_SECONDS,
    base_url: Annotated[
        str | None,
        typer.Option(help="Where the service is reached (default: PASSBACK_PUBLIC_BASE_URL)."),
    ] = None,
) -> None:
    """Make a development teacher token (HS256 with PASSBACK_TEACHER_TOKEN_SECRET)."""
    settings = _settings()
    token = mint_teacher_token(
        teacher_token_secret(settings),
        teacher,
        audience=settings.teacher_token_audience,
        ttl_seconds=ttl,
        formative_id=formative,
    )
    typer.echo(token)
    if formative is not None:
        base = base_url or settings.public_base_url or "http://127.0.0.1:8000"
        typer.echo(teacher_page_url(base, formative, token))


@cli.command()
def prune(
    older_than: Annotated[
        int | None,
        typer.Option(
            min=1, help="Days to keep (default: PASSBACK_RETENTION_DAYS, 180).", metavar="DAYS"
        ),
    ] = None,
) -> None:
    """Remove finished manual jobs, events and batches older than the retention time."""
    from datetime import timedelta

    from app.clock import utc_now
    from app.store.db import create_engine, create_session_factory
    from app.store.retention import Pruned
    from app.store.retention import prune as prune_store

    settings = _settings()
    _require_migrated(settings)
    days = older_than or settings.retention_days

    async def run() -> Pruned:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            cutoff = utc_now() - timedelta(days=days)
            return await prune_store(create_session_factory(engine), older_than=cutoff)
        finally:
            await engine.dispose()

    pruned = asyncio.run(run())
    typer.echo(
        f"removed what finished more than {days} days ago: {pruned.jobs} jobs "
        f"({pruned.attempts} attempts), {pruned.events} events, {pruned.batches} batches"
    )


class DatabaseNotMigratedError(Exception):
    """The database the settings name does not exist or its schema is not at head."""


def _require_migrated(settings: Settings) -> None:
    """Refuse, with how to fix it, a command on a database that was never migrated. A missing
    SQLite file is not created (nor its folder)."""
    from app.store.db import create_engine, schema_revision
    from app.store.migrate import head_revision

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database or "")
        if not path.exists():
            raise DatabaseNotMigratedError(
                f"no database at {path.resolve()}: run `passback migrate` first "
                "(or set PASSBACK_DATABASE_URL)"
            )

    async def revision() -> str | None:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            return await schema_revision(engine)
        finally:
            await engine.dispose()

    found, expected = asyncio.run(revision()), head_revision()
    if found != expected:
        raise DatabaseNotMigratedError(
            f"the database is not migrated (schema at {found or 'nothing'}, this release "
            f"needs {expected}): run `passback migrate`"
        )


def _database_named() -> str:
    """The configured database, password hidden (for error lines)."""
    try:
        url = Settings().database_url
    except Exception:
        return "the database"
    return make_url(url).render_as_string(hide_password=True)


def describe_error(exc: BaseException) -> str | None:
    """The one line a known mistake answers with; None for an unexpected error."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        where = exc.request.url.copy_with(path="/", query=None)
        reason = exc or "connection refused"
        return f"cannot reach {where} ({reason}): is it running (scripts/start)?"
    if isinstance(exc, httpx.TimeoutException):
        return f"{exc.request.url} did not answer in time"
    if isinstance(exc, ServiceAnswerError):
        return str(exc)
    if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
        return describe_settings_error(exc)
    if isinstance(exc, SettingsError):
        return f"invalid setting: {exc}"
    if isinstance(exc, NoTeacherTokenSecretError | DatabaseNotMigratedError | NoApiKeyError):
        return str(exc)
    text = str(exc)
    if isinstance(exc, SQLAlchemyError) and ("no such table" in text or "does not exist" in text):
        return "the database is not migrated: run `passback migrate`"
    if isinstance(exc, DBAPIError | OSError) or type(exc).__module__.startswith("asyncpg"):
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return f"cannot use {_database_named()}: {reason}"
    return None


def _wants_traceback(args: Sequence[str]) -> bool:
    return "--debug" in args or os.environ.get("PASSBACK_LOG_LEVEL", "").upper() == "DEBUG"


def main(args: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if args is None else args)
    try:
        cli(prog_name="passback", args=arguments)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        if _wants_traceback(arguments):
            raise
        line = describe_error(exc)
        if line is None:
            line = f"unexpected error: {type(exc).__name__}: {exc} (run with --debug to see where)"
        typer.echo(f"passback: {line}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
