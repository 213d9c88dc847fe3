"""White-label in a real browser (issue 15.5): a share page and the loader served on an agency's own
domain. Chromium resolves the mapped host (and an unmapped one) to 127.0.0.1, so every request
carries that Host header, exactly as behind a CNAME."""

from __future__ import annotations

import html
import re
import struct
import zlib
from urllib.parse import urlsplit

import pytest

from conftest import CHROMIUM_ARGS, chromium_path
from licenses import branding, hosts
from licenses.models import CustomDomain
from widgets.services.preview_links import preview_link_create, preview_link_token
from widgets.tests.factories import n8n_config, publish

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MAPPED = "chat.agency-a.test"
UNMAPPED = "evil.test"


def png(width: int = 4, height: int = 4) -> bytes:
    """A real (decodable) RGB PNG, so the browser's <img> has a natural size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xf9\x73\x16" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture
def mapped_browser(playwright_driver):
    rules = f"--host-resolver-rules=MAP {MAPPED} 127.0.0.1, MAP {UNMAPPED} 127.0.0.1"
    browser = playwright_driver.chromium.launch(
        executable_path=chromium_path(), headless=True, args=[*CHROMIUM_ARGS, rules]
    )
    yield browser
    browser.close()


@pytest.fixture
def branded(owner, agency_a, widget_a, fake_n8n):
    hosts.host_map_invalidate()
    membership = owner.memberships.get()
    branding.brand_update(
        actor=membership,
        agency=agency_a,
        name="Acme Chat",
        accent_color="#f97316",
        primary_color="#1d4ed8",
        support_email="help@acme.example",
        logo_file=png(),
    )
    domain = CustomDomain.objects.create(agency=agency_a, host=MAPPED)
    hosts.custom_domain_set_status(domain=domain, status=CustomDomain.Status.VERIFIED)
    yield publish(widget_a, owner, config=n8n_config(fake_n8n.webhook))
    hosts.host_map_invalidate()


def test_a_white_labelled_share_page_on_the_agencys_domain(mapped_browser, live_server, owner, branded, outsider):
    port = urlsplit(live_server.url).port
    link = preview_link_create(widget=branded, user=owner, membership=owner.memberships.get())
    page = mapped_browser.new_page()
    try:
        page.goto(f"http://{MAPPED}:{port}/app/p/{preview_link_token(link)}/")
        assert page.locator(".topbar .brand-text").inner_text() == "Acme Chat"
        assert page.title() == f"Preview · {branded.name} · Acme Chat"
        logo = page.locator(".topbar img.brand-logo")
        page.wait_for_function("() => document.querySelector('.topbar img.brand-logo').naturalWidth === 4")
        assert logo.get_attribute("src").startswith(f"/brand/{branded.license.agency_id}/logo-")
        assert page.evaluate("() => getComputedStyle(document.querySelector('.topbar')).backgroundColor") == (
            "rgb(29, 78, 216)"
        )
        assert page.locator("a[href='mailto:help@acme.example']").is_visible()
        assert page.locator("#powered-by").inner_text() == "Powered by Switchboard"
        # The draft preview inside runs on the mapped host too.
        frame = page.frame_locator("#preview-frame")
        frame.locator("switchboard-widget").first.wait_for(state="attached")

        branded.license.white_label = True
        branded.license.save()
        page.reload()
        assert page.locator(".topbar .brand-text").inner_text() == "Acme Chat"
        assert page.locator("#powered-by").count() == 0 and "Powered by" not in page.content()

        # The platform's pages are not served on the agency's domain.
        response = page.goto(f"http://{MAPPED}:{port}/app/login/")
        assert response.status == 404 and page.locator("body").inner_text() == "Not found."
    finally:
        page.close()


def test_the_loader_and_chat_run_from_the_agencys_domain_and_an_unmapped_host_is_refused(
    mapped_browser, live_server, client, owner, branded, customer_site, fake_n8n
):
    port = urlsplit(live_server.url).port
    client.force_login(owner)
    embed = client.get(f"/app/widgets/{branded.public_id}/embed/", HTTP_HOST=urlsplit(live_server.url).netloc)
    tag = html.unescape(re.search(r'<pre id="snippet-script">(.*?)</pre>', embed.content.decode(), re.S).group(1))
    assert f'<script src="http://{MAPPED}:{port}/api/widget/{branded.license.key}/chat-widget.js' in tag
    url = customer_site.page("shop.html", f"<!doctype html><html><body><h1>Shop</h1>{tag}</body></html>")

    page = mapped_browser.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    try:
        page.goto(url)
        page.locator("switchboard-widget >> .lau").click()
        box = page.locator("switchboard-widget >> textarea")
        box.fill("Do you ship to Spain?")
        box.press("Enter")
        page.locator("switchboard-widget >> .m.a >> text=Hello from n8n").wait_for()
        assert [body["chatInput"] for body in fake_n8n.sent] == ["Do you ship to Spain?"]
        ours = [u for u in requested if "/api/widget/" in u or "/static/widget/" in u]
        assert any(urlsplit(u).path.endswith("/chat") for u in ours) and any("chat-widget.js" in u for u in ours), ours
        assert all(urlsplit(u).netloc == f"{MAPPED}:{port}" for u in ours), ours

        # The same server on a host nobody mapped: refused as before (400), nothing served.
        response = page.goto(f"http://{UNMAPPED}:{port}/api/widget/{branded.license.key}/config")
        assert response.status == 400
        assert "Acme" not in page.content()
    finally:
        page.close()
