"""pyproject.toml declares what app/ imports, and imports (or knowingly uses) what it declares."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent

USED_WITHOUT_AN_IMPORT = {
    "aiosqlite": "SQLAlchemy's sqlite+aiosqlite driver, chosen by the database URL",
    "sniffio": "httpcore looks for it on every request and falls back slowly without it",
    "python-multipart": "FastAPI's form parsing",
}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    return {_normalized(requirement.name): requirement for requirement in requirements}


def _brought_by_extras(declared: dict[str, Requirement]) -> set[str]:
    """Distributions a declared dependency installs through the extras we ask of it
    (uvicorn[standard] → uvloop, …)."""
    brought = set()
    for requirement in declared.values():
        for text in requires(requirement.name) or []:
            needed = Requirement(text)
            if needed.marker is not None and any(
                needed.marker.evaluate({"extra": extra}) for extra in requirement.extras
            ):
                brought.add(_normalized(needed.name))
    return brought


def _imported_top_level_modules() -> dict[str, set[str]]:
    """Top-level modules imported by app/, with the files importing each."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "app").rglob("*.py"):
        if "migrations/versions" in path.as_posix():
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top != "app" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_of_app_is_a_declared_dependency() -> None:
    declared = _declared()
    allowed = set(declared) | _brought_by_extras(declared)
    distributions = packages_distributions()
    undeclared = {}
    for module, files in _imported_top_level_modules().items():
        names = {_normalized(name) for name in distributions.get(module, [module])}
        if not names & allowed:
            undeclared[module] = sorted(files)
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_declared_dependency_is_imported_or_its_use_is_stated() -> None:
    distributions = packages_distributions()
    imported = {
        _normalized(name)
        for module in _imported_top_level_modules()
        for name in distributions.get(module, [module])
    }
    unused = sorted(set(_declared()) - imported - set(USED_WITHOUT_AN_IMPORT))
    assert unused == [], f"declared but never imported by app/: {unused}"


def test_authlib_is_not_declared_and_joserfc_is() -> None:
    declared = _declared()
    assert "authlib" not in declared
    assert "joserfc" in declared
