"""Log lines are JSON with the request id, and never carry secrets."""

from __future__ import annotations

import json
import logging

from app.logs import JsonFormatter, redact, request_id_var


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
