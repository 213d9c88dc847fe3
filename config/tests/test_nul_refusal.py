"""`HostileInputMiddleware`'s NUL rule decides the same under WSGI (META) and ASGI (the raw scope headers and
query string, read without parsing them): a NUL in the path, the query (raw or %00) or any header a view reads
is refused; the same text without one is not."""

from __future__ import annotations

import io

import pytest
from django.core.handlers.asgi import ASGIRequest
from django.test import RequestFactory

from config.middleware import _has_nul
from conftest import http_scope

CASES = [
    ("/api/widget/k/chat", "widget=w1", {"X-Switchboard-Visitor": "v-1"}, False),
    ("/api/widget/k/chat", "widget=w1&page=a%00b", {}, True),
    ("/api/widget/k/chat", "widget=w1&page=a%2500b", {}, False),  # an encoded "%00" is text, not a NUL
    ("/api/widget/k/chat", "widget=w1", {"X-Switchboard-Visitor": "v\x00"}, True),
    ("/api/widget/k/chat", "widget=w1", {"Origin": "https://a.example\x00.com"}, True),
    ("/api/widget/k/chat", "widget=w1", {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) é"}, False),
]


def _wsgi(path, query, headers):
    return RequestFactory().post(f"{path}?{query}", data=b"{}", content_type="application/json", headers=headers)


def _asgi(path, query, headers):
    raw = [(b"host", b"testserver"), (b"content-type", b"application/json"), (b"content-length", b"2")]
    raw += [(k.lower().encode(), v.encode("latin-1", errors="replace")) for k, v in headers.items()]
    return ASGIRequest(http_scope("POST", f"{path}?{query}", raw), io.BytesIO(b"{}"))


@pytest.mark.parametrize(("path", "query", "headers", "refused"), CASES)
def test_wsgi_and_asgi_requests_decide_alike(path, query, headers, refused):
    assert _has_nul(_wsgi(path, query, headers)) is refused
    assert _has_nul(_asgi(path, query, headers)) is refused
