"""The direction of imports, as the folders show it: web → services → store and images → config, errors, clock.

- qrtrack/web/ speaks HTTP and may import anything below it; its blueprints (api, public, dashboard) never import
  each other.
- The services, at the top of the package, know nothing of Flask or web/, and never import each other (what two
  share moves down, to a helper, store/ or images/). Helpers (geo, useragent, ...) are what services share:
  they import no service.
- store/ (all SQL) and images/ (all rendering) import neither services nor helpers nor web/.
- The assembly (the package's __init__, factory, cli) puts the app together and may import anything.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qrtrack"
ASSEMBLY = {"__init__", "factory", "cli"}
FOUNDATION = {"config", "errors", "clock", "records"}
SERVICES = {"codes", "scans", "keys", "accounts", "analytics"}
HELPERS = {"geo", "useragent", "destinations", "links", "text", "rollups"}
LOWER_LAYERS = {"store", "images"}
BLUEPRINTS = {"api", "public", "dashboard"}
WEB_FRAMEWORKS = {"flask", "flask_login", "flask_wtf", "flask_limiter", "werkzeug.routing", "jinja2"}


def module_path(path: Path) -> tuple[str, ...]:
    """qrtrack/store/codes.py -> ("store", "codes"); qrtrack/web/dashboard/__init__.py -> ("web", "dashboard")."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts


def imported(path: Path) -> set[tuple[str, ...]]:
    """What a file imports: qrtrack's modules as their path inside the package, others as ("", top-level name)."""
    package = module_path(path) if path.name == "__init__.py" else module_path(path)[:-1]
    found: set[tuple[str, ...]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = tuple(alias.name.split("."))
                found.add(parts[1:] if parts[0] == "qrtrack" else ("", parts[0]))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = tuple(node.module.split("."))
                if parts[0] != "qrtrack":
                    found.add(("", parts[0]))
                    found.add(("", node.module))
                    continue
                base = parts[1:]
            else:
                base = package[:len(package) - node.level + 1] + (tuple(node.module.split(".")) if node.module else ())
            found.add(base)
            found.update(base + (alias.name,) for alias in node.names)
    return {parts for parts in found if parts}


def layer(parts: tuple[str, ...]) -> str:
    first = parts[0]
    if first in ("web", "store", "images"):
        return first
    if first in ASSEMBLY:
        return "assembly"
    if first in FOUNDATION:
        return "foundation"
    if first in SERVICES:
        return "service"
    if first in HELPERS:
        return "helper"
    return "unknown"


SOURCES = [path for path in sorted(PACKAGE.rglob("*.py")) if "versions" not in path.parts]
ALLOWED = {
    "foundation": {"foundation"},
    "store": {"store", "foundation"},
    "images": {"images", "foundation"},
    "helper": {"helper", "store", "images", "foundation"},
    "service": {"helper", "store", "images", "foundation"},
    "web": {"web", "service", "helper", "store", "images", "foundation"},
    "assembly": {"assembly", "web", "service", "helper", "store", "images", "foundation"},
}


def test_every_module_belongs_to_a_layer():
    unknown = [str(path.relative_to(PACKAGE)) for path in SOURCES if layer(module_path(path)) == "unknown"]
    assert not unknown, f"add these to a layer in {Path(__file__).name}: {unknown}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    here = module_path(path)
    own = layer(here)
    for target in imported(path):
        if target[0] == "":
            if own not in ("web", "assembly"):
                assert target[1] not in WEB_FRAMEWORKS, f"{path.name} imports {target[1]}: only web/ may"
            continue
        if layer(target) == "unknown" and len(target) == 1:
            continue  # a name imported from the package itself, such as create_app
        assert layer(target) in ALLOWED[own], f"{'/'.join(here)} ({own}) imports {'.'.join(target)} ({layer(target)})"


def test_services_do_not_import_each_other():
    for name in SERVICES:
        targets = {target[0] for target in imported(PACKAGE / f"{name}.py") if target[0]}
        assert not targets & (SERVICES - {name}), name


def test_blueprints_do_not_import_each_other():
    for path in (PACKAGE / "web").rglob("*.py"):
        here = module_path(path)
        own = here[1] if len(here) > 1 else None
        if own not in BLUEPRINTS:
            continue
        reached = {target[1] for target in imported(path) if target[:1] == ("web",) and len(target) > 1}
        assert not reached & (BLUEPRINTS - {own}), f"{'/'.join(here)} imports {reached & (BLUEPRINTS - {own})}"


def test_the_layer_test_sees_the_imports_it_checks():
    """Guards the checks above against passing because imported() found nothing."""
    assert ("store", "db") in imported(PACKAGE / "codes.py")
    assert ("web", "context") in imported(PACKAGE / "web" / "dashboard" / "codes_pages.py")
    assert ("", "flask") in imported(PACKAGE / "web" / "api.py")
    assert layer(("store", "sqlite_scans")) == "store" and layer(("useragent",)) == "helper"
