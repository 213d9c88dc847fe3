"""Real Chromium: a customer page on 127.0.0.1 frames the ChatKit page from the live server on localhost.

The ChatKit CDN script is intercepted with a stand-in `<openai-chatkit>` that records `setOptions`,
draws a small mock from the theme (so the screenshot shows it) and calls `api.getClientSecret(null)`,
which goes through our session endpoint to the fake OpenAI server.
"""

from __future__ import annotations

import os

import pytest

from chatkit.tests.conftest import TENANT_KEY, make_chatkit_widget
from licenses.models import LicenseUsage
from licenses.tests.factories import LicenseFactory
from widgets.models import Conversation

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STAND_IN = r"""
class StandInChatKit extends HTMLElement {
  setOptions(options) {
    window.__chatkitSameApi = window.__chatkitApi === options.api;
    window.__chatkit = {options: JSON.parse(JSON.stringify(options)), apiKeys: Object.keys(options.api)};
    window.__chatkitApi = options.api;
    window.__chatkitCalls = (window.__chatkitCalls || 0) + 1;
    const t = options.theme, accent = t.color.accent.primary, dark = t.colorScheme === "dark";
    this.style.cssText = `display:flex;flex-direction:column;height:100%;font:${t.typography.baseSize}px system-ui;` +
      `background:${dark ? "#111827" : "#fff"};color:${dark ? "#f9fafb" : "#111827"}`;
    const prompts = options.startScreen.prompts.map(p =>
      `<button style="margin:4px;padding:6px 12px;border-radius:10px;border:1px solid ${accent};background:none;` +
      `color:inherit">${p.label}</button>`).join("");
    this.innerHTML = `<div style="padding:10px 14px;border-bottom:1px solid #374151">Stand-in ChatKit</div>` +
      `<div style="flex:1;display:flex;flex-direction:column;justify-content:center;align-items:center">` +
      `<h2 style="margin:0 0 12px">${options.startScreen.greeting}</h2><div>${prompts}</div></div>` +
      `<div id="status" style="padding:4px 14px;font-size:12px;opacity:.8">getting a client secret…</div>` +
      `<div style="display:flex;gap:8px;padding:10px"><input placeholder="${options.composer.placeholder}" ` +
      `style="flex:1;padding:10px;border-radius:12px;border:1px solid #4b5563;background:none;color:inherit">` +
      `<button style="background:${accent};color:#fff;border:0;border-radius:12px;padding:0 16px">Send</button></div>`;
    options.api.getClientSecret(null).then(secret => {
      window.__chatkitSecret = secret;
      this.querySelector("#status").textContent = "connected with client secret " + secret.slice(0, 12) + "…";
    }, error => { window.__chatkitError = String(error); });
  }
}
customElements.define("openai-chatkit", StandInChatKit);
"""


def host_html(src: str, *, no_referrer: bool = False) -> str:
    meta = '<meta name="referrer" content="no-referrer">' if no_referrer else ""
    return f"""<!doctype html><html><head><meta charset="utf-8">{meta}<title>Shop</title>
<style>body{{margin:0;font:16px Georgia,serif;background:#fdf6e3}} header{{padding:16px 24px;background:#b58900;color:#fff}}
iframe{{position:fixed;right:20px;bottom:20px;width:400px;height:560px;border:0;border-radius:16px;
box-shadow:0 10px 30px rgba(0,0,0,.3)}}</style></head>
<body><header><h1>The customer's shop</h1></header><p style="padding:0 24px">Products, prices, things.</p>
<iframe id="chat" title="Chat" src="{src}"></iframe></body></html>"""


@pytest.fixture
def browser_page(chromium):
    context = chromium.new_context(viewport={"width": 1100, "height": 720})
    context.route("https://cdn.platform.openai.com/**",
                  lambda route: route.fulfill(status=200, content_type="application/javascript", body=STAND_IN))
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.console_errors = errors
    yield page
    context.close()


def chat_frame(page):
    for frame in page.frames:
        if "/widget/chatkit/" in frame.url:
            return frame
    raise AssertionError(f"no ChatKit frame in {[f.url for f in page.frames]}")


def test_customer_page_frames_chatkit_and_gets_a_secret_from_our_endpoint(
    fake_openai, live_server, host_pages, browser_page, license_a, owner, artifacts_dir
):
    widget = make_chatkit_widget(license=license_a, user=owner)
    # The loader passes the visitor id it keeps in the customer site's (first-party) localStorage:
    # a cross-site iframe has no storage of its own in Chromium (third-party storage is blocked).
    src = (f"{live_server.url}/widget/chatkit/{license_a.key}?widget={widget.public_id}&origin={host_pages.origin}"
           "&visitor=visitor-from-loader-1")
    assert live_server.url.startswith("http://localhost:") and host_pages.origin.startswith("http://127.0.0.1:")

    browser_page.goto(host_pages.add("/shop.html", host_html(src)))
    frame = chat_frame(browser_page)
    frame.wait_for_function("() => window.__chatkitSecret || window.__chatkitError", timeout=15000)
    browser_page.wait_for_timeout(200)
    browser_page.screenshot(path=os.path.join(artifacts_dir, "chatkit-embedded.png"))

    assert frame.evaluate("window.__chatkitError || null") is None
    secret = frame.evaluate("window.__chatkitSecret")
    recorded = frame.evaluate("window.__chatkit")
    # The secret the element got is the one the fake OpenAI server issued through our endpoint.
    assert fake_openai.issued == [secret]
    [upstream] = fake_openai.requests
    assert upstream.path == "/v1/chatkit/sessions"
    assert upstream.headers["authorization"] == f"Bearer {TENANT_KEY}"
    assert isinstance(upstream.body["user"], str) and upstream.body["user"].startswith("sb_")
    # The theme and texts the element was given come from the published config.
    options = recorded["options"]
    assert recorded["apiKeys"] == ["getClientSecret"]
    assert options["theme"]["colorScheme"] == "dark"
    assert options["theme"]["color"]["accent"] == {"primary": "#0f766e", "level": 2}
    assert options["theme"]["color"]["grayscale"] == {"hue": 210, "tint": 4, "shade": 2}
    assert options["theme"]["radius"] == "soft" and options["theme"]["density"] == "compact"
    assert options["startScreen"]["greeting"] == "Welcome to the shop!"
    assert options["composer"]["placeholder"] == "Ask the shop…"
    assert frame.locator("text=connected with client secret").is_visible()
    assert LicenseUsage.objects.get(license=license_a).chatkit_sessions == 1
    assert Conversation.objects.filter(widget=widget, channel="chatkit").count() == 1

    # ChatKit refreshing an expiring secret continues the same conversation, uncounted.
    refreshed = frame.evaluate("window.__chatkitApi.getClientSecret(window.__chatkitSecret)")
    assert refreshed == fake_openai.issued[-1] and refreshed != secret
    assert LicenseUsage.objects.get(license=license_a).chatkit_sessions == 1
    assert Conversation.objects.filter(widget=widget).count() == 1

    # A reload is the same visitor: the same ChatKit `user` upstream.
    browser_page.reload()
    chat_frame(browser_page).wait_for_function("() => window.__chatkitSecret", timeout=15000)
    assert fake_openai.requests[2].body["user"] == upstream.body["user"]


def test_frame_ancestors_blocks_a_page_not_on_the_allowed_list(
    fake_openai, live_server, host_pages, browser_page, agency_a, owner, artifacts_dir
):
    # The license allows only localhost; the customer page on 127.0.0.1 lies about its origin and
    # hides its Referer: the page refuses to serve without a Referer (and frame-ancestors would
    # block any page that did render).
    license = LicenseFactory(agency=agency_a, client_name="Localhost only", allowed_domains=["localhost"])
    widget = make_chatkit_widget(license=license, user=owner)
    src = (f"{live_server.url}/widget/chatkit/{license.key}?widget={widget.public_id}"
           f"&origin=http://localhost:1234")

    browser_page.goto(host_pages.add("/evil.html", host_html(src, no_referrer=True)))
    browser_page.wait_for_timeout(1500)
    browser_page.screenshot(path=os.path.join(artifacts_dir, "chatkit-frame-ancestors-blocked.png"))

    frames = [f for f in browser_page.frames if "/widget/chatkit/" in f.url]
    assert all(f.evaluate("!!window.__chatkit") is False for f in frames if _evaluable(f))
    assert fake_openai.requests == []
    refused = [f for f in frames if _evaluable(f)
               and "Open this chat from the website" in f.evaluate("document.body.innerText")]
    assert refused


def _evaluable(frame) -> bool:
    try:
        frame.evaluate("1")
        return True
    except Exception:
        return False


def test_foreign_page_shows_the_refusal_inside_the_frame(
    fake_openai, live_server, host_pages, browser_page, agency_a, owner, artifacts_dir
):
    license = LicenseFactory(agency=agency_a, client_name="Elsewhere", allowed_domains=["shop.example.com"])
    widget = make_chatkit_widget(license=license, user=owner)
    src = f"{live_server.url}/widget/chatkit/{license.key}?widget={widget.public_id}&origin={host_pages.origin}"

    browser_page.goto(host_pages.add("/foreign.html", host_html(src)))
    frame = chat_frame(browser_page)
    frame.wait_for_selector("text=not on the license's allowed domains", timeout=10000)
    browser_page.screenshot(path=os.path.join(artifacts_dir, "chatkit-foreign-origin.png"))
    assert fake_openai.requests == []


def test_configurator_preview_gets_a_draft_session_with_csrf(
    fake_openai, live_server, browser_page, license_a, owner, artifacts_dir
):
    from django.conf import settings as django_settings
    from django.test import Client

    widget = make_chatkit_widget(license=license_a, user=owner, publish=False)
    client = Client()
    client.force_login(owner)
    browser_page.context.add_cookies([{
        "name": django_settings.SESSION_COOKIE_NAME, "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
        "url": live_server.url,
    }])

    browser_page.goto(f"{live_server.url}/widget/chatkit/preview/{widget.public_id}")
    browser_page.wait_for_function("() => window.__chatkitSecret || window.__chatkitError", timeout=15000)
    browser_page.screenshot(path=os.path.join(artifacts_dir, "chatkit-preview.png"))

    assert browser_page.evaluate("window.__chatkitError || null") is None
    assert fake_openai.issued == [browser_page.evaluate("window.__chatkitSecret")]
    assert browser_page.locator("[data-testid=legacy-note]").is_visible()
    assert not LicenseUsage.objects.filter(chatkit_sessions__gt=0).exists()
    assert Conversation.objects.get().is_preview is True


def test_configurator_chatkit_preview_follows_unsaved_theme_edits_live(
    fake_openai, live_server, browser_page, license_a, owner, artifacts_dir
):
    """The configurator frames the real ChatKit preview page; an accent colour change (not saved)
    reaches the mounted element through setOptions, mapped on the server, with the same api."""
    from django.conf import settings as django_settings
    from django.test import Client

    widget = make_chatkit_widget(license=license_a, user=owner, publish=False)
    before = widget.config
    client = Client()
    client.force_login(owner)
    browser_page.context.add_cookies([{
        "name": django_settings.SESSION_COOKIE_NAME, "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
        "url": live_server.url,
    }])
    page_errors: list[str] = []
    browser_page.on("pageerror", lambda e: page_errors.append(str(e)))

    browser_page.goto(f"{live_server.url}/app/widgets/{widget.public_id}/")
    browser_page.wait_for_function("window.switchboardConfigurator !== undefined")
    browser_page.frame_locator("#preview-frame").locator("iframe.ck-frame").wait_for(state="attached")
    frame = _preview_chatkit_frame(browser_page)
    frame.wait_for_function("() => window.__chatkitSecret", timeout=15000)
    assert frame.evaluate("window.__chatkit.options.theme.color.accent.primary") == "#0f766e"

    browser_page.get_by_role("tab", name="Appearance").click()
    browser_page.get_by_label("Accent colour", exact=True).fill("#be123c")
    frame.wait_for_function(
        "() => window.__chatkit.options.theme.color.accent.primary === '#be123c'", timeout=10000)
    browser_page.wait_for_timeout(300)
    browser_page.screenshot(path=os.path.join(artifacts_dir, "chatkit-configurator-live-accent.png"))

    recorded = frame.evaluate("window.__chatkit")
    assert recorded["options"]["theme"]["color"]["accent"] == {"primary": "#be123c", "level": 2}
    assert recorded["options"]["startScreen"]["greeting"] == "Welcome to the shop!"
    assert recorded["apiKeys"] == ["getClientSecret"]
    assert frame.evaluate("window.__chatkitCalls") >= 2
    assert frame.evaluate("window.__chatkitSameApi") is True
    # The same iframe was updated in place, not reloaded with the saved draft.
    assert frame.url.endswith(f"/widget/chatkit/preview/{widget.public_id}")
    widget.refresh_from_db()
    assert widget.config == before  # nothing saved
    assert browser_page.locator("#save-state").inner_text() == "Unsaved changes"
    assert not page_errors
    assert not LicenseUsage.objects.filter(chatkit_sessions__gt=0).exists()


def _preview_chatkit_frame(page):
    for _ in range(50):
        for frame in page.frames:
            if "/widget/chatkit/preview/" in frame.url:
                return frame
        page.wait_for_timeout(100)
    raise AssertionError(f"no ChatKit preview frame in {[f.url for f in page.frames]}")
