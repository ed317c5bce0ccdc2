"""No secret reaches the logs, even at DEBUG, in a run that exercises every path that handles
one: API keys, teacher tokens and their secret, launch id_tokens, client assertions, access
tokens (issued, expired, refreshed), and the tool's private key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.figures import Figures
from tests.reliability.full_run import full_run

SECRET_KINDS = (
    "api_key",
    "teacher_token",
    "teacher_token_secret",
    "id_token",
    "client_assertion",
    "access_token",
    "private_key",
)


@pytest.mark.timeout(240)
async def test_no_secret_of_a_full_run_reaches_its_logs(
    tool_keys_dir: Path, tmp_path_factory: pytest.TempPathFactory, figures: Figures
) -> None:
    run = await full_run(tool_keys_dir, tmp_path_factory.mktemp("full-run"))

    # The run did handle every kind of secret, and the log is the verbose one.
    for kind in SECRET_KINDS:
        assert run.secrets.get(kind), f"the run handled no {kind}"
    assert len(run.secrets["access_token"]) >= 4  # two tokens: before and after the 401
    debug_lines = [r for r in run.log_records() if r["level"] == "debug"]
    assert any("POST /v1/submission-events" in r["message"] for r in debug_lines)

    leaks = {
        kind: sorted(value[:10] + "…" for value in values if value in run.log_text)
        for kind, values in run.secrets.items()
    }
    assert not any(leaks.values()), leaks
    figures.record("log_lines", len(run.log_text.splitlines()))
    figures.record("secret_values_searched", {k: len(v) for k, v in sorted(run.secrets.items())})
