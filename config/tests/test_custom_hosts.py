"""Agencies' own domains (config/hosts.py): a verified mapped host passes the host check and is a CSRF
trusted origin for requests to itself at once; an unmapped or pending host is refused exactly as before; on a mapped host only
the public surface answers; the Embed tab prints the agency's domain."""

from __future__ import annotations

import gc
import html
import re
import weakref

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import reverse

from config.hosts import CsrfViewMiddleware, CustomHostMiddleware
from licenses import hosts
from licenses.models import CustomDomain
from widgets.services.preview_links import preview_link_create, preview_link_token

pytestmark = pytest.mark.django_db

MAPPED = "chat.agency-a.example"
ORIGIN = "https://shop.example.com"


@pytest.fixture(autouse=True)
def _fresh_host_map():
    hosts.host_map_invalidate()
    yield
    hosts.host_map_invalidate()


def map_host(agency, host=MAPPED, status=CustomDomain.Status.VERIFIED):
    domain = CustomDomain.objects.create(agency=agency, host=host)
    return hosts.custom_domain_set_status(domain=domain, status=status)


def test_an_unmapped_host_is_refused_as_before(client, widget_a):
    for path in ("/app/login/", f"/api/widget/{widget_a.license.key}/config", "/healthz"):
        response = client.get(path, HTTP_HOST="evil.example", HTTP_ORIGIN=ORIGIN)
        assert response.status_code == 400, path


def test_a_pending_or_failed_host_is_refused(client, agency_a, widget_a):
    map_host(agency_a, status=CustomDomain.Status.PENDING)
    map_host(agency_a, host="failed.agency-a.example", status=CustomDomain.Status.FAILED)
    for host in (MAPPED, "failed.agency-a.example"):
        response = client.get(f"/api/widget/{widget_a.license.key}/config", HTTP_HOST=host, HTTP_ORIGIN=ORIGIN)
        assert response.status_code == 400


def test_a_verified_host_serves_the_loader_and_public_api(client, agency_a, widget_a):
    map_host(agency_a)
    key = widget_a.license.key
    config = client.get(f"/api/widget/{key}/config", HTTP_HOST=MAPPED, HTTP_ORIGIN=ORIGIN)
    assert config.status_code == 200 and config.json()["widget"] == widget_a.public_id
    loader = client.get(f"/api/widget/{key}/chat-widget.js", HTTP_HOST=f"{MAPPED}:443")
    assert loader.status_code == 200 and loader["Content-Type"].startswith("application/javascript")
    assert f'"key":"{key}"' in loader.content.decode()


def test_a_verified_host_serves_share_pages(client, owner, agency_a, widget_a):
    map_host(agency_a)
    link = preview_link_create(widget=widget_a, user=owner, membership=owner.memberships.get())
    response = client.get(reverse("app-share", kwargs={"token": preview_link_token(link)}), HTTP_HOST=MAPPED)
    assert response.status_code == 200 and b"Draft preview of" in response.content


@pytest.mark.parametrize("path", ["/app/", "/app/login/", "/admin/login/", "/api/v1/me/", "/api/docs/", "/healthz"])
def test_a_mapped_host_serves_nothing_but_the_public_surface(client, owner, agency_a, path):
    map_host(agency_a)
    client.force_login(owner)
    response = client.get(path, HTTP_HOST=MAPPED)
    assert response.status_code == 404 and response.content == b"Not found."
    assert client.get(path).status_code in {200, 302}  # the platform's own host is unchanged


def test_removing_a_mapping_refuses_the_host_at_once(client, agency_a, widget_a):
    domain = map_host(agency_a)
    url = f"/api/widget/{widget_a.license.key}/config"
    assert client.get(url, HTTP_HOST=MAPPED, HTTP_ORIGIN=ORIGIN).status_code == 200
    hosts.custom_domain_delete(domain=domain)
    assert client.get(url, HTTP_HOST=MAPPED, HTTP_ORIGIN=ORIGIN).status_code == 400


def test_a_request_through_the_host_check_is_freed_when_it_ends():
    """The request's `get_host` does not hold the request: no reference cycle keeps a finished request (its
    META, query, body) alive until the cyclic GC runs; it still answers the request's host."""
    seen = []
    gc.disable()  # only reference counting may free it
    try:
        request = RequestFactory().get("/api/widget/x/config")
        CustomHostMiddleware(lambda r: seen.append(r.get_host()) or HttpResponse())(request)
        assert seen == ["testserver"] and request.get_host() == "testserver"
        gone = weakref.ref(request)
        del request
        assert gone() is None
    finally:
        gc.enable()


def _origin_verified(origin: str, host: str) -> bool:
    request = RequestFactory().post("/api/widget/x/chat", HTTP_HOST=host, HTTP_ORIGIN=origin)
    request.get_host = lambda: host
    return CsrfViewMiddleware(lambda r: HttpResponse())._origin_verified(request)


def test_csrf_trusted_origins_follow_the_mapping(agency_a, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://ops.platform.example"]
    middleware = CsrfViewMiddleware(lambda r: HttpResponse())
    assert middleware.allowed_origins_exact == {"https://ops.platform.example"}
    # TLS ends at the proxy: the request arrives as http, its Origin is https://<mapped host>.
    assert not _origin_verified(f"https://{MAPPED}", MAPPED)
    domain = map_host(agency_a)
    hosts.host_map_refresh()
    assert _origin_verified(f"https://{MAPPED}", MAPPED)
    assert not _origin_verified("https://evil.example", MAPPED)
    assert _origin_verified("https://ops.platform.example", MAPPED)
    hosts.custom_domain_delete(domain=domain)
    hosts.host_map_refresh()
    assert not _origin_verified(f"https://{MAPPED}", MAPPED)


def test_a_mapped_host_is_trusted_only_on_requests_to_itself(agency_a, agency_b, settings):
    """An agency controls its domain's DNS (it may point it elsewhere once verified, or share a parent domain
    with the platform): its origin vouches for requests to that host only, never for a POST to the
    platform's own host or to another agency's domain."""
    settings.CSRF_TRUSTED_ORIGINS = []
    map_host(agency_a)
    map_host(agency_b, host="chat.agency-b.example")
    hosts.host_map_refresh()
    middleware = CsrfViewMiddleware(lambda r: HttpResponse())
    assert middleware.allowed_origins_exact == set() and middleware.csrf_trusted_origins_hosts == []
    assert _origin_verified(f"https://{MAPPED}", MAPPED)
    assert not _origin_verified(f"https://{MAPPED}", "testserver")
    assert not _origin_verified(f"https://{MAPPED}", "chat.agency-b.example")
    assert _origin_verified("https://chat.agency-b.example", "chat.agency-b.example")


def _snippet(client, widget) -> str:
    content = client.get(f"/app/widgets/{widget.public_id}/embed/").content.decode()
    return html.unescape(re.search(r'<pre id="snippet-script">(.*?)</pre>', content, re.S).group(1))


def test_the_embed_tab_prints_the_agencys_verified_domain(client, owner, outsider, agency_a, widget_a, widget_b):
    client.force_login(owner)
    key = widget_a.license.key
    assert f'<script src="http://testserver/api/widget/{key}/chat-widget.js' in _snippet(client, widget_a)
    map_host(agency_a, host="pending.agency-a.example", status=CustomDomain.Status.PENDING)
    assert '<script src="http://testserver/' in _snippet(client, widget_a)
    map_host(agency_a)
    assert f'<script src="http://{MAPPED}/api/widget/{key}/chat-widget.js' in _snippet(client, widget_a)
    secure = client.get(f"/app/widgets/{widget_a.public_id}/embed/", secure=True).content.decode()
    assert f"https://{MAPPED}/api/widget/{key}/chat-widget.js" in html.unescape(secure)
    # Agency B's snippet stays on the platform's host.
    client.force_login(outsider)
    assert '<script src="http://testserver/' in _snippet(client, widget_b)
    assert MAPPED not in client.get(f"/app/widgets/{widget_b.public_id}/embed/").content.decode()


# --- A mapped host serves its own agency only (security review, 4 Dec) ---------------------------


def _public_calls(key: str) -> list[tuple[str, str, dict]]:
    """(method, path, extra) for every public surface a license key reaches."""
    json_post = {"content_type": "application/json", "data": "{}"}
    return [
        ("get", f"/api/widget/{key}/chat-widget.js", {}),
        ("get", f"/api/widget/{key}/config", {}),
        ("post", f"/api/widget/{key}/chat", json_post),
        ("post", f"/api/widget/{key}/identify", json_post),
        ("post", f"/api/widget/{key}/tools/lookup", json_post),
        ("post", f"/api/widget/{key}/voice/record", json_post),
        ("get", f"/api/realtime/config?license={key}", {}),
        ("post", "/api/realtime/client-secret", {"content_type": "application/json", "data": f'{{"license":"{key}"}}'}),
        ("post", "/api/livekit/token", {"content_type": "application/json", "data": f'{{"license":"{key}"}}'}),
        ("get", f"/widget/chatkit/{key}", {"HTTP_REFERER": ORIGIN + "/"}),
    ]


def _call(client, method, path, extra, host):
    return getattr(client, method)(path, HTTP_HOST=host, HTTP_ORIGIN=ORIGIN, **extra)


def test_a_mapped_host_refuses_another_agencys_license_on_every_public_surface(client, agency_a, widget_a, widget_b):
    map_host(agency_a)
    for method, path, extra in _public_calls(widget_b.license.key):
        refused = _call(client, method, path, extra, MAPPED)
        assert refused.status_code == 404, (path, refused.status_code, refused.content[:200])
        assert b"unknown_license" in refused.content or b"does not exist" in refused.content, path
        on_platform = _call(client, method, path, extra, "testserver")
        assert on_platform.status_code != 404 or b"unknown_license" not in on_platform.content, path
    for method, path, extra in _public_calls(widget_a.license.key):
        own = _call(client, method, path, extra, MAPPED)
        assert b"unknown_license" not in own.content and b"does not exist" not in own.content, path


def test_a_mapped_host_refuses_another_agencys_share_links(client, owner, outsider, agency_a, widget_a, widget_b):
    map_host(agency_a)
    own = preview_link_token(preview_link_create(widget=widget_a, user=owner, membership=owner.memberships.get()))
    other = preview_link_token(
        preview_link_create(widget=widget_b, user=outsider, membership=outsider.memberships.get())
    )
    for name in ("app-share", "chatkit:share"):
        assert client.get(reverse(name, kwargs={"token": other}), HTTP_HOST=MAPPED).status_code == 404, name
        assert client.get(reverse(name, kwargs={"token": other})).status_code != 404, name
    assert client.get(reverse("app-share", kwargs={"token": own}), HTTP_HOST=MAPPED).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_chats_short_route_on_a_mapped_host_refuses_another_agencys_license(agency_a, widget_a, widget_b, outsider):
    """The public chat's short route under ASGI (config/chat_route.py) skips the middleware chain: the host's
    agency must hold there too, warm caches included (a first request on the platform host warms them)."""
    import json

    from asgiref.sync import async_to_sync

    from config.asgi import http_app
    from conftest import asgi_request
    from widgets.tests.factories import n8n_config, publish

    publish(widget_b, outsider, config=n8n_config("https://n8n.example/webhook/x/chat"))
    map_host(agency_a)
    hosts.host_map_refresh()
    body = b'{"action": "loadPreviousSession", "sessionId": "s-1"}'
    path = f"/api/widget/{widget_b.license.key}/chat?widget={widget_b.public_id}"

    def post(host: str) -> tuple[int, bytes]:
        headers = [
            (b"host", host.encode()),
            (b"origin", ORIGIN.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        status, _headers, content = async_to_sync(asgi_request)(http_app, "POST", path, headers, body)
        return status, content

    for host in ("testserver", MAPPED, "testserver", MAPPED):  # warm, then mapped; again with warm caches
        status, content = post(host)
        if host == MAPPED:
            assert status == 404 and json.loads(content)["error"]["code"] == "unknown_license", content
        else:
            assert status != 404, content


def test_a_requests_accepted_host_is_checked_once_and_a_refused_one_every_time(monkeypatch, agency_a):
    from django.core.exceptions import DisallowedHost

    from config import hosts as config_hosts

    map_host(agency_a)
    hosts.host_map_refresh()  # as the middleware's __call__ does for a stale map (this test calls _refusal only)
    checks: list[str] = []
    real = config_hosts._get_host

    def counted(request):
        checks.append(request.META["HTTP_HOST"])
        return real(request)

    monkeypatch.setattr(config_hosts, "_get_host", counted)
    middleware = CustomHostMiddleware(lambda request: HttpResponse())
    for host in (MAPPED, "testserver"):
        request = RequestFactory().get("/api/widget/x/config", HTTP_HOST=host)
        assert middleware._refusal(request) is None
        assert [request.get_host() for _ in range(3)] == [host] * 3
    assert checks == [MAPPED, "testserver"]  # once per request
    request = RequestFactory().get("/api/widget/x/config", HTTP_HOST="evil.example.net")
    middleware._refusal(request)
    for _ in range(2):
        with pytest.raises(DisallowedHost):
            request.get_host()
    assert checks[2:] == ["evil.example.net"] * 2
