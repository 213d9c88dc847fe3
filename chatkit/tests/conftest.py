"""ChatKit fixtures: the fake OpenAI server, hosted-mode ChatKit widgets, a session poster."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.test import Client

from chatkit.tests.fake_openai import FakeOpenAI
from widgets.services import widget_publish, widget_update
from widgets.tests.factories import WidgetFactory

TENANT_KEY = "sk-tenant-test-key-1234"
PLATFORM_KEY = "sk-platform-test-key-9876"
WORKFLOW_ID = "wf_SECRETWORKFLOW"
ALLOWED = "https://shop.example.com"

HOSTED_CONFIG = {
    "connection": {"provider": "chatkit", "chatkit": {"mode": "hosted", "workflow_id": WORKFLOW_ID}},
    "appearance": {"chatkit": {"color_scheme": "dark", "grayscale_hue": 210, "grayscale_tint": 4,
                               "grayscale_shade": 2, "accent_color": "#0f766e", "accent_level": 2,
                               "radius": "soft", "density": "compact", "base_font_size": 15}},
    "behaviour": {"greeting": "Welcome to the shop!", "starter_prompts": ["Phones under $500?", "Trade-ins?"],
                  "placeholder": "Ask the shop…", "file_uploads": True, "history": False, "locale": "de-DE"},
}


@pytest.fixture(scope="session")
def _fake_openai_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_openai(_fake_openai_server: FakeOpenAI, settings) -> FakeOpenAI:
    _fake_openai_server.reset()
    settings.OPENAI_BASE_URL = _fake_openai_server.base_url
    settings.OPENAI_API_KEY = PLATFORM_KEY
    return _fake_openai_server


def make_chatkit_widget(*, license, user, config=None, secrets=None, publish=True):
    widget = WidgetFactory(license=license, provider="chatkit", created_by=user)
    membership = user.memberships.get(agency=license.agency)
    widget = widget_update(widget=widget, membership=membership, config=config or HOSTED_CONFIG,
                           secrets={"openai_api_key": TENANT_KEY} if secrets is None else secrets)
    if publish:
        widget_publish(widget=widget, user=user, membership=membership)
    widget.refresh_from_db()
    return widget


@pytest.fixture
def chatkit_widget(license_a, owner):
    """A published hosted-mode ChatKit widget of agency A with the tenant's own OpenAI key."""
    return make_chatkit_widget(license=license_a, user=owner)


@pytest.fixture
def post_session():
    """post_session(body, origin=ALLOWED) → response of POST /api/chatkit/sessions."""

    def post(body: dict, origin: str | None = ALLOWED, **headers):
        client = Client()
        if origin is not None:
            headers["HTTP_ORIGIN"] = origin
        return client.post("/api/chatkit/sessions", data=json.dumps(body), content_type="application/json",
                           **headers)

    return post


# --- browser helpers -------------------------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """While Playwright's sync API runs its event loop, Django keeps the test body's DB connection
    in a context-local slot that fixture teardown never sees: close it here, in the test's own
    context, or PostgreSQL refuses to drop the test database at the end of the run."""
    yield
    if pyfuncitem.get_closest_marker("browser"):
        from django.db import connections

        connections.close_all()


@pytest.fixture
def host_pages():
    """A tiny HTTP server on 127.0.0.1 (another origin than live_server's localhost) serving the
    "customer page": host_pages.add(path, html) then host_pages.url(path)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    pages: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            body = pages.get(self.path.split("?")[0])
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body or b"not found")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Host:
        origin = f"http://127.0.0.1:{server.server_address[1]}"

        def add(self, path: str, html: str) -> str:
            pages[path] = html.encode()
            return self.origin + path

    yield Host()
    server.shutdown()
    server.server_close()
