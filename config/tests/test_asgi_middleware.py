"""The ASGI handler runs Django's own middleware hooks inline (config/middleware.py): same behaviour as
Django's classes — security headers, CSRF refusals, a saved session, flash messages — with no thread hop
for a hook that does no I/O. Requests go through `config.asgi.django_asgi_app` itself, the app Uvicorn
serves, so a hook that touched the database on the event loop would fail here with a 500
(SynchronousOnlyOperation)."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from asgiref.sync import SyncToAsync, async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.core.handlers import asgi

from config.middleware import INLINE_MIDDLEWARE, ASGIHandler

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
        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": raw,
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        communicator = ApplicationCommunicator(self.app, scope)
        await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
        start = await communicator.receive_output(10)
        content = b""
        while True:
            message = await communicator.receive_output(10)
            content += message.get("body", b"")
            if not message.get("more_body"):
                break
        await communicator.wait(10)
        response_headers: dict[str, list[str]] = {}
        for key, value in start["headers"]:
            response_headers.setdefault(key.decode().lower(), []).append(value.decode())
        for cookie in response_headers.get("set-cookie", []):
            parsed = SimpleCookie(cookie)
            for name, morsel in parsed.items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return start["status"], response_headers, content.decode()


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
