"""Figures the reliability and security tests measure, printed at the end of the run.

A test asks for the `figures` fixture and calls ``figures.record("recovery_seconds", 0.4)``;
the terminal summary lists every figure by test, and ``PASSBACK_FIGURES_FILE=path`` also
writes them as JSON. Both conftests (tests/reliability, tests/security) re-export the fixture
and the hook; the summary is printed once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

FIGURES_KEY = pytest.StashKey[dict[str, dict[str, Any]]]()
PRINTED_KEY = pytest.StashKey[bool]()
FIGURES_FILE_ENV = "PASSBACK_FIGURES_FILE"


class Figures:
    def __init__(self, store: dict[str, Any]) -> None:
        self._store = store

    def record(self, name: str, value: Any) -> None:
        self._store[name] = value


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    everything = request.config.stash.setdefault(FIGURES_KEY, {})
    return Figures(everything.setdefault(request.node.nodeid, {}))


def print_figures(terminalreporter: Any, config: pytest.Config) -> None:
    if config.stash.get(PRINTED_KEY, False):
        return
    config.stash[PRINTED_KEY] = True
    measured = {
        test: values for test, values in config.stash.get(FIGURES_KEY, {}).items() if values
    }
    if not measured:
        return
    terminalreporter.section("reliability and security figures")
    for test, values in measured.items():
        line = ", ".join(f"{name}={value}" for name, value in values.items())
        terminalreporter.write_line(f"{test.split('::', 1)[-1]}: {line}")
    cases = sum(int(values.get("schemathesis_cases", 0)) for values in measured.values())
    if cases:
        terminalreporter.write_line(f"schemathesis cases run: {cases}")
    path = os.environ.get(FIGURES_FILE_ENV)
    if path:
        Path(path).write_text(json.dumps(measured, indent=2, default=str))
