"""The direction of imports: HTTP layer → services → store/qrimage/errors → schema; no Flask below the HTTP layer."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qrtrack"
SERVICES = {"codes", "scans", "keys", "accounts", "analytics"}
HTTP = {"public", "api", "dashboard", "web", "cli", "openapi", "factory", "fastpath", "__init__"}
WEB_FRAMEWORKS = {"flask", "flask_login", "flask_wtf", "flask_limiter"}


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    return relative.parts[0] if relative.parts[0] != "__init__" or len(relative.parts) == 1 else "__init__"


def imported_modules(path: Path) -> set[str]:
    """Top-level names imported: qrtrack siblings by their first part, third-party by package."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.add(node.module.split(".")[0])
            elif node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names)
    return names


SOURCES = [path for path in PACKAGE.rglob("*.py")
           if "migrations" not in path.parts and path.parent.name != "dashboard" and module_name(path) not in HTTP]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    imports = imported_modules(path)
    name = path.stem
    assert not imports & WEB_FRAMEWORKS, f"{name} imports a web framework: only the HTTP layer may"
    assert not imports & (HTTP - {"__init__"}), f"{name} imports the HTTP layer"
    if name in SERVICES:
        assert not imports & (SERVICES - {name}), f"service {name} imports another service"
    else:
        assert not imports & SERVICES, f"{name} sits below the services but imports one"


def test_blueprints_do_not_import_each_other():
    for name in ("public", "api"):
        imports = imported_modules(PACKAGE / f"{name}.py")
        assert not imports & ({"public", "api", "dashboard"} - {name})
    for path in (PACKAGE / "dashboard").glob("*.py"):
        assert not imported_modules(path) & {"public", "api"}, path.name
