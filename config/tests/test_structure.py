"""The import graph points down (STYLE 13, issue 12.1): `config` is the top wiring, so no app module
imports it. The error shape and the JSON body rule live on the ground floor (licenses/api.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("licenses", "widgets", "chatkit", "realtime")


def _app_modules() -> list[Path]:
    return [
        path
        for app in APPS
        for path in sorted((ROOT / app).rglob("*.py"))
        if "tests" not in path.relative_to(ROOT).parts  # tests may wire the whole stack (config.asgi)
    ]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_walk_sees_the_apps():
    modules = {path.relative_to(ROOT).as_posix() for path in _app_modules()}
    assert {"licenses/api.py", "widgets/chat.py", "chatkit/views.py", "realtime/consumers.py"} <= modules


def test_no_app_module_imports_config():
    offenders = {
        path.relative_to(ROOT).as_posix(): sorted(
            name for name in _imported_modules(path) if name == "config" or name.startswith("config.")
        )
        for path in _app_modules()
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_licenses_imports_no_app_above_it():
    above = ("widgets", "chatkit", "realtime")
    offenders = {
        path.relative_to(ROOT).as_posix(): sorted(
            name for name in _imported_modules(path) if name.split(".")[0] in above
        )
        for path in _app_modules()
        if path.relative_to(ROOT).parts[0] == "licenses"
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_one_role_gate():
    """Every membership role check that refuses goes through licenses.tenancy.role_require (issue 12.2)."""
    gates = {
        path.relative_to(ROOT).as_posix()
        for path in _app_modules()
        if "Your role may not" in path.read_text() or "def _require" in path.read_text()
    }
    assert gates == {"licenses/tenancy.py"}


def test_one_rule_for_the_openai_key():
    """ "The tenant's key, else the platform key" lives in widgets.selectors.openai_api_key only (issue 12.2)."""
    readers = {
        path.relative_to(ROOT).as_posix() for path in _app_modules() if "settings.OPENAI_API_KEY" in path.read_text()
    }
    assert readers == {"widgets/selectors.py"}


def test_one_json_body_parser():
    """Request bodies are parsed by licenses.api only (size, depth, NUL and surrogate rules; issue 12.2)."""
    parsers = {
        path.relative_to(ROOT).as_posix()
        for path in _app_modules()
        if "json.loads(request" in path.read_text() or "json.load(request" in path.read_text()
    }
    assert parsers == set()


def test_turn_writes_have_one_home():
    """Every transcript row (chat turn, failure, voice turn, relay tool, ChatKit turn) is written by
    widgets.services.turns (issue 12.2/12.3)."""
    writers = {
        path.relative_to(ROOT).as_posix()
        for path in _app_modules()
        if any(w in path.read_text() for w in ("Message.objects.create", "Message.objects.bulk_create"))
    }
    assert writers == {"widgets/services/turns.py"}


def test_the_agency_shell_lives_in_licenses():
    """Licenses, members, invitations and the agency switch are licenses pages; widgets/views has widget pages."""
    shell = ("def license_list", "def license_domains", "def member_list", "def agency_switch", "def render_app")
    homes = {
        path.relative_to(ROOT).as_posix() for path in _app_modules() for name in shell if name + "(" in path.read_text()
    }
    assert homes == {"licenses/pages.py", "licenses/app_shell.py"}


def test_widgets_never_call_openai_themselves():
    """OpenAI is called by the channels that use it (chatkit, realtime); the configurator's ChatKit
    connection test lives in chatkit/ and is registered with widgets.connection_test (issue 12.3)."""
    callers = {
        path.relative_to(ROOT).as_posix()
        for path in _app_modules()
        if path.relative_to(ROOT).parts[0] == "widgets"
        and (
            {"openai", "httpx2"} & {m.split(".")[0] for m in _imported_modules(path)} or "/models/" in path.read_text()
        )
    }
    assert callers == set()


def _cross_app_test_imports() -> dict[str, list[str]]:
    """Test modules that import another app's `tests` package other than its `tests.factories` (each app's
    factories are its published test kit, DESIGN "every app has tests/ with factories.py"; shared fixtures
    live in the root conftest)."""
    found: dict[str, list[str]] = {}
    packages = (*APPS, "config")
    for app in packages:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "tests" not in path.relative_to(ROOT).parts:
                continue
            names = sorted(
                name
                for name in _imported_modules(path)
                if name.split(".")[0] in packages
                and name.split(".")[0] != app
                and name.split(".")[1:2] == ["tests"]
                and name.split(".")[2:] != ["factories"]
            )
            if names:
                found[path.relative_to(ROOT).as_posix()] = names
    return found


def test_the_cross_app_walk_sees_an_import(tmp_path):
    module = tmp_path / "test_x.py"
    module.write_text("def test_x():\n    from widgets.tests.conftest import publish\n")
    assert _imported_modules(module) == {"widgets.tests.conftest"}


def test_no_test_module_imports_another_apps_tests():
    """Issue 12.5: another app's tests are reached only through its factories; fixtures, fakes and
    helpers shared across apps live in the root conftest."""
    assert _cross_app_test_imports() == {}


def test_one_live_app_server_and_one_customer_site_for_tests():
    """Browser tests share the root conftest's `asgi_live_server` and `customer_site` (issue 12.5): no app's
    tests define their own live app server or customer site (fake upstreams are theirs to keep)."""
    homes = {
        path.relative_to(ROOT).as_posix()
        for app in APPS
        for path in sorted((ROOT / app).rglob("*.py"))
        if "tests" in path.relative_to(ROOT).parts
        and any(
            marker in path.read_text()
            for marker in (
                "SimpleHTTPRequestHandler",
                "def asgi_live_server",
                "def asgi_server",
                "def customer_site",
                "def host_pages",
                "def host_site",
                "def static_site",
            )
        )
    }
    assert homes == set()
    root = (ROOT / "conftest.py").read_text()
    assert "def asgi_live_server(" in root and "def customer_site(" in root
