"""Log lines are JSON with the request id, and never carry secrets."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from app.logs import JsonFormatter, redact, request_id_var
from tests.support.processes import service_env, start_service


def test_tokens_bearer_credentials_and_private_keys_are_redacted() -> None:
    line = (
        "POST token: client_assertion=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln&scope=x "
        "Authorization: Bearer dev-secret-key "
        "-----BEGIN PRIVATE KEY-----\nMIIEv\n-----END PRIVATE KEY-----"
    )
    cleaned = redact(line)
    assert "eyJhbGciOiJSUzI1NiJ9" not in cleaned
    assert "dev-secret-key" not in cleaned
    assert "MIIEv" not in cleaned
    assert "Bearer [redacted]" in cleaned


def test_json_lines_carry_the_request_id_and_extra_fields() -> None:
    token = request_id_var.set("req-1")
    try:
        record = logging.LogRecord("passback", logging.INFO, __file__, 1, "hello", None, None)
        record.platform_id = "p-1"
        entry = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert entry["request_id"] == "req-1"
    assert entry["platform_id"] == "p-1"
    assert entry["message"] == "hello"


def test_uvicorn_color_message_never_lands_in_json_lines() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started", None, None)
    record.color_message = "\x1b[32mStarted\x1b[0m"
    line = JsonFormatter().format(record)
    assert "\x1b" not in line and "\\u001b" not in line
    assert "color_message" not in json.loads(line)


def test_json_lines_carry_level_logger_time_and_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "passback", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["level"], entry["logger"], entry["message"]) == ("error", "passback", "failed")
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]


async def test_with_json_logs_every_line_of_the_service_is_json(
    tmp_path: Path, tool_keys_dir: Path
) -> None:
    """The start-up lines too, and uvicorn's own (no plain text mixed into the stream)."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'passback.db'}"
    env = service_env(database_url, var_dir=tmp_path, keys_dir=tool_keys_dir, log_json="true")
    service = await start_service(env, log_path=tmp_path / "service.log", extra_args=("--sandbox",))
    await service.terminate()
    lines = [line for line in service.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on any plain line
    messages = [record["message"] for record in records]
    assert any(message.startswith("passback is up") for message in messages), messages
    assert not any("color_message" in record for record in records)
