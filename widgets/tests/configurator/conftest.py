"""Browser helpers for the configurator's Playwright tests (Debian's Chromium, live server)."""

from __future__ import annotations

import pytest


@pytest.fixture
def browser(chromium):
    """The session's one Chromium (root conftest `chromium`)."""
    return chromium


@pytest.fixture
def signed_in(browser_contexts, live_server, client):
    """signed_in(user, width=1440) -> a Playwright page with that user's session cookie set."""
    from urllib.parse import urlsplit

    def make(user, width: int = 1440, height: int = 900):
        context = browser_contexts(viewport={"width": width, "height": height})
        if user is not None:
            client.force_login(user)
            host = urlsplit(live_server.url).hostname
            context.add_cookies(
                [{"name": "sessionid", "value": client.cookies["sessionid"].value, "domain": host, "path": "/"}]
            )
        page = context.new_page()
        page.set_default_timeout(10_000)
        return page

    return make


class _Recorder:
    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        self.body: dict | str = {"output": "pong"}
        self.delay = 0.0


@pytest.fixture
def fake_upstream():
    """A real HTTP server on 127.0.0.1 (free port) standing in for n8n / OpenAI. Set .status/.body/.delay."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    recorder = _Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            recorder.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": json.loads(raw) if raw else None,
                }
            )
            if recorder.delay:
                time.sleep(recorder.delay)
            body = recorder.body if isinstance(recorder.body, str) else json.dumps(recorder.body)
            data = body.encode()
            self.send_response(recorder.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield recorder
    server.shutdown()
    server.server_close()
