"""The ASGI handler runs Django's own middleware hooks inline (config/middleware.py): same behaviour as
Django's classes — security headers, CSRF refusals, a saved session, flash messages — with no thread hop
for a hook that does no I/O. Requests go through `config.asgi.django_asgi_app` itself, the app Uvicorn
serves, so a hook that touched the database on the event loop would fail here with a 500
(SynchronousOnlyOperation)."""

from __future__ import annotations

import asyncio
import json
import re
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from asgiref.sync import SyncToAsync, async_to_sync
from django.conf import settings
from django.core.handlers import asgi

from config.middleware import INLINE_MIDDLEWARE, ASGIHandler
from conftest import asgi_request, http_scope

pytestmark = pytest.mark.django_db(transaction=True)


class Browser:
    """A cookie jar around one ASGI app."""

    def __init__(self, app):
        self.app = app
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, *, form: dict | None = None, headers: dict | None = None):
        return async_to_sync(self._request)(method, path, form, headers or {})

    async def _request(self, method, path, form, headers):
        body = urlencode(form).encode() if form is not None else b""
        raw = [(b"host", b"testserver")]
        if form is not None:
            raw.append((b"content-type", b"application/x-www-form-urlencoded"))
        if self.cookies:
            raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()))
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        status, raw_headers, content = await asgi_request(self.app, method, path, raw, body)
        response_headers: dict[str, list[str]] = {}
        for key, value in raw_headers:
            response_headers.setdefault(key.decode().lower(), []).append(value.decode())
        for cookie in response_headers.get("set-cookie", []):
            parsed = SimpleCookie(cookie)
            for name, morsel in parsed.items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return status, response_headers, content.decode()


@pytest.fixture
def browser():
    return Browser(ASGIHandler())


def test_settings_keep_djangos_paths_and_the_handler_swaps_in_the_inline_hooks():
    before = list(settings.MIDDLEWARE)
    handler = ASGIHandler()
    assert before == settings.MIDDLEWARE  # Django's deploy checks look for these exact paths
    assert all(path in before for path in INLINE_MIDDLEWARE)
    view_hooks = [hook.__qualname__ for hook in handler._view_middleware]
    assert view_hooks == ["InlineHooksMixin.__init__.<locals>.process_view"]  # CSRF's, inline


def test_public_request_makes_no_thread_hop_from_djangos_middleware(browser, widget_a, monkeypatch):
    hops: list[str] = []
    original = SyncToAsync.__call__

    def counting(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting)

    def middleware_hops() -> list[str]:
        return [h for h in hops if h.endswith(("process_request", "process_response", "process_view"))]

    status, headers, _ = Browser(asgi.ASGIHandler()).request("GET", "/healthz")  # Django's own handler
    assert status == 200
    assert "SecurityMiddleware.process_request" in middleware_hops()  # what this test would catch
    hops.clear()

    status, headers, _ = browser.request("GET", "/healthz")
    assert status == 200
    assert middleware_hops() == []
    # Django's own hooks still ran: SecurityMiddleware and XFrameOptionsMiddleware set their headers.
    assert headers["x-content-type-options"] == ["nosniff"]
    assert headers["x-frame-options"] == ["DENY"]
    assert headers["referrer-policy"] == [settings.SECURE_REFERRER_POLICY]


def test_csrf_refuses_a_form_post_without_its_token(browser, owner):
    status, _, _ = browser.request("POST", "/app/login/", form={"username": "owner-a", "password": "pass-word-123"})
    assert status == 403


def test_login_saves_the_session_and_a_flash_message_survives_the_redirect(browser, owner, license_a):
    status, _, page = browser.request("GET", "/app/login/")
    assert status == 200 and "csrftoken" in browser.cookies
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    status, headers, _ = browser.request(
        "POST", "/app/login/", form={"username": "owner-a", "password": "pass-word-123", "csrfmiddlewaretoken": token}
    )
    assert status == 302, headers
    assert "sessionid" in browser.cookies  # saved in the request's thread, not on the event loop

    status, _, page = browser.request("GET", "/app/widgets/new/")
    assert status == 200  # the saved session signs us in
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    status, headers, _ = browser.request(
        "POST",
        "/app/widgets/new/",
        form={"name": "Via ASGI", "license": license_a.key, "provider": "n8n", "csrfmiddlewaretoken": token},
    )
    assert status == 302, headers
    status, _, page = browser.request("GET", headers["location"][0])
    assert status == 200
    assert "Created “Via ASGI”." in page
    status, _, page = browser.request("GET", headers["location"][0])
    assert "Created “Via ASGI”." not in page  # a flash message shows once


# --- the request body cap (REQUEST_MAX_BODY_BYTES) ---------------------------------------------------


def _send_body(path: str, chunks: list[bytes], *, declared: int | None) -> tuple[int, dict, bytes, int]:
    """POST `chunks` (more_body between them) through the app Uvicorn serves; returns the status, headers,
    body and how many chunks the app asked for before it answered."""
    from config.asgi import application

    async def run():
        headers = [(b"host", b"testserver"), (b"content-type", b"application/json")]
        if declared is not None:
            headers.append((b"content-length", str(declared).encode()))
        scope = http_scope("POST", path, headers)
        pending = list(chunks)
        asked = 0

        async def receive():
            nonlocal asked
            asked += 1
            if not pending:
                await asyncio.Event().wait()  # the client sends nothing more (would be a disconnect later)
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending)}

        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        await asyncio.wait_for(application(scope, receive, send), timeout=10)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], dict(start["headers"]), body, asked

    return async_to_sync(run)()


def test_a_declared_body_over_the_cap_is_refused_before_any_byte_is_read(settings):
    settings.REQUEST_MAX_BODY_BYTES = 64 * 1024
    status, headers, body, asked = _send_body("/api/widget/any/identify", [b"x" * 10], declared=10**10)
    assert status == 413 and asked == 0
    assert json.loads(body) == {"error": {"code": "payload_too_large", "message": "The request body is too large."}}
    assert headers[b"content-type"] == b"application/json"
    status, headers, body, asked = _send_body("/app/login/", [b"x"], declared=64 * 1024 + 1)
    assert (status, body, asked) == (413, b"The request body is too large.", 0)


def test_a_chunked_body_is_counted_and_cut_off_at_the_cap(settings):
    """No Content-Length (chunked): the handler stops reading at the first chunk past the cap; the rest of
    a multi-gigabyte upload is never asked for, let alone written to a temporary file."""
    settings.REQUEST_MAX_BODY_BYTES = 64 * 1024
    chunk = b"x" * 16 * 1024
    status, _headers, body, asked = _send_body("/app/brand/", [chunk] * 1000, declared=None)
    assert status == 413 and asked == 5  # 4 chunks = 64 KB are allowed; the fifth passes the cap
    status, _headers, body, asked = _send_body("/api/widget/any/chat", [chunk] * 1000, declared=None)
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large" and asked == 5


def test_a_body_under_the_cap_reaches_the_view(settings, widget_a):
    settings.REQUEST_MAX_BODY_BYTES = 64 * 1024
    body = b'{"user_id": "' + b"x" * 30000 + b'"}'
    status, _headers, answer, _asked = _send_body(
        f"/api/widget/{widget_a.license.key}/identify", [body[:20000], body[20000:]], declared=None
    )
    assert status != 413 and json.loads(answer)["error"]["code"] != "payload_too_large"


# --- the startup heap is frozen (gc.freeze) ------------------------------------------------------------


def test_asgi_startup_objects_are_out_of_the_cyclic_gc():
    """The app Uvicorn imports leaves its startup objects frozen: a full collection then walks only what
    requests create (issue 11 bench: walking ~310,000 startup objects stopped the loop 0.3-0.5 s), and young
    collections are 10,000 allocations apart."""
    import os
    import subprocess
    import sys

    code = (
        "import gc, config.asgi; "
        "print(gc.get_freeze_count(), gc.get_threshold()[0], len(gc.get_objects()), "
        "'chatkit.views' in __import__('sys').modules)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="1", DATABASE_URL="", REDIS_URL="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    frozen, young_threshold, tracked, views_loaded = out.stdout.split()
    assert int(frozen) > 100_000
    assert int(young_threshold) >= 10_000  # young collections far apart (in-flight requests are mostly alive)
    assert int(tracked) < int(frozen) // 20  # almost nothing left for a full collection to walk
    assert views_loaded == "True"  # the chat route's views were imported before the freeze
