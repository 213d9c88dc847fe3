"""The embed in a real browser: a customer's page on one origin loads the loader from the app on another.

App: pytest-django's live_server. Customer site: a tiny http.server on 127.0.0.1 with hostile CSS.
"""

from __future__ import annotations

import os

import pytest

from licenses.services import license_suspend
from licenses.tests.factories import LicenseFactory
from widgets.tests.conftest import n8n_config, publish
from widgets.tests.factories import WidgetFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE_CSS = """
* { color: red !important; font-size: 40px !important; font-family: "Comic Sans MS", cursive !important;
    line-height: 3 !important; letter-spacing: 4px !important; }
button { display: none !important; }
div, section, form { padding: 30px !important; border: 5px dashed lime !important; }
body { background: #fafafa; margin: 0 }
"""

PRODUCTS = [
    {"type": "ui.product_cards", "products": [
        {"id": "1", "title": "Pixel 8a", "description": "6.1-inch, great camera", "price": "449.00",
         "currency": "USD", "image_url": "", "url": "https://shop.example.com/pixel-8a", "in_stock": True},
        {"id": "2", "title": "Galaxy A55", "description": "Long battery life", "price": "399.00",
         "currency": "USD", "image_url": "", "url": "https://shop.example.com/galaxy-a55", "in_stock": False},
    ]},
]


def page_html(script_src: str, attrs: str = "", body: str = "") -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Acme Shop</title>
<style>{HOSTILE_CSS}</style></head><body>
<h1>Acme Phones</h1><p>Customer page with hostile CSS.</p>{body}
<script src="{script_src}" {attrs}></script>
</body></html>"""


@pytest.fixture
def host_page(host_site, live_server):
    def make(key: str, attrs: str = "", body: str = "", name: str = "index.html", query: str = "") -> str:
        src = f"{live_server.url}/api/widget/{key}/chat-widget.js{query}"
        return host_site.page(name, page_html(src, attrs, body))

    return make


@pytest.fixture
def browser_page(chromium, artifacts_dir, request):
    contexts = []

    def make(**kwargs):
        context = chromium.new_context(**kwargs)
        contexts.append(context)
        page = context.new_page()
        page.console = []  # type: ignore[attr-defined]
        page.on("console", lambda m: page.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: page.console.append(("pageerror", str(e))))
        return page

    yield make
    failed = getattr(request.node, "rep_call", None)
    for index, context in enumerate(contexts):
        if failed is not None and failed.failed:
            for page in context.pages:
                page.screenshot(path=os.path.join(artifacts_dir, f"FAILED-{request.node.name}-{index}.png"))
        context.close()


@pytest.fixture
def shop_widget(widget_a, owner, fake_n8n):
    return publish(widget_a, owner, config=n8n_config(fake_n8n.webhook))


def shadow(selector: str) -> str:
    return f"switchboard-widget >> {selector}"  # Playwright CSS pierces open shadow roots


def switchboard_errors(page) -> list[str]:
    return [text for kind, text in page.console if text.startswith("Switchboard:")]


def test_popup_chat_with_reply_and_product_cards(browser_page, host_page, shop_widget, fake_n8n, artifacts_dir):
    fake_n8n.reply(json={"output": "Here are **two phones** under $500:\n- Pixel 8a\n- Galaxy A55", "ui": PRODUCTS})
    page = browser_page(viewport={"width": 1280, "height": 860})
    page.goto(host_page(shop_widget.license.key))
    launcher = page.locator(shadow(".lau"))
    launcher.wait_for()
    assert launcher.is_visible()  # the page's `button {display:none}` does not reach it
    launcher.click()
    panel = page.locator(shadow(".pn"))
    assert panel.is_visible()
    assert page.locator(shadow(".hd b")).inner_text() == "Acme Phones"
    assert "Hi! How can I help?" in page.locator(shadow(".lg")).inner_text()
    page.locator(shadow("textarea")).fill("Phones under $500?")
    page.keyboard.press("Enter")
    page.locator(shadow(".cd")).first.wait_for()
    assert page.locator(shadow(".m.a .b strong")).inner_text() == "two phones"
    cards = page.locator(shadow(".cd"))
    assert cards.count() == 2
    assert "$449.00" in cards.nth(0).inner_text()
    assert "Out of stock" in cards.nth(1).inner_text()
    link = cards.nth(0).locator("a")
    assert link.get_attribute("href") == "https://shop.example.com/pixel-8a"
    assert link.get_attribute("rel") == "noopener noreferrer"
    assert link.get_attribute("target") == "_blank"
    body = fake_n8n.sent[-1]
    assert body["action"] == "sendMessage" and body["chatInput"] == "Phones under $500?"
    assert body["sessionId"].startswith("s_") and body["metadata"]["visitorId"].startswith("v_")
    # The page's CSS does not leak in.
    style = page.evaluate("""() => {
        const root = document.querySelector('switchboard-widget').shadowRoot;
        const b = getComputedStyle(root.querySelector('.m.a .b'));
        const send = getComputedStyle(root.querySelector('.sd'));
        return {color: b.color, size: b.fontSize, family: b.fontFamily, spacing: b.letterSpacing,
                sendDisplay: send.display, border: b.borderTopStyle};
    }""")
    assert style["color"] != "rgb(255, 0, 0)"
    assert style["size"] == "15px"
    assert "Comic" not in style["family"]
    assert style["sendDisplay"] != "none"
    assert style["border"] != "dashed"
    assert switchboard_errors(page) == []
    page.wait_for_timeout(400)  # let the entry animations settle
    page.screenshot(path=os.path.join(artifacts_dir, "embed-popup-reply-cards.png"))
    # Reload: session and transcript come back.
    session = body["sessionId"]
    page.reload()
    page.locator(shadow(".lau")).click()
    page.locator(shadow(".cd")).first.wait_for()
    assert "Phones under $500?" in page.locator(shadow(".lg")).inner_text()
    page.locator(shadow("textarea")).fill("And trade-ins?")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('switchboard-widget').shadowRoot"
                           ".querySelectorAll('.m.a').length >= 3")
    assert fake_n8n.sent[-1]["sessionId"] == session


def test_retry_after_failure(browser_page, host_page, shop_widget, fake_n8n):
    fake_n8n.reply(json={"oops": True}, status=500)
    page = browser_page()
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).click()
    page.locator(shadow("textarea")).fill("Hello?")
    page.keyboard.press("Enter")
    retry = page.locator(shadow(".er button"))
    retry.wait_for()
    assert "unavailable" in page.locator(shadow(".er")).inner_text()
    retry.click()
    page.locator(shadow("text=Hello from n8n")).wait_for()
    assert page.locator(shadow(".er")).count() == 0
    assert [b["chatInput"] for b in fake_n8n.sent] == ["Hello?", "Hello?"]


def test_streaming_reply_renders_progressively(browser_page, host_page, shop_widget, owner, fake_n8n):
    publish(shop_widget, owner, config={"connection": {"n8n": {"streaming": True}}})
    fake_n8n.reply(stream=[{"type": "begin"}] + [{"type": "item", "content": w} for w in
                                                 ["Streaming ", "works ", "*nicely*."]] + [{"type": "end"}],
                   delay=0.05)
    page = browser_page()
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).click()
    page.locator(shadow(".st button")).first.click()  # a starter prompt
    page.locator(shadow(".m.a em")).wait_for()
    assert "Streaming works nicely." in page.locator(shadow(".lg")).inner_text()
    assert fake_n8n.sent[-1]["chatInput"] == "Phones under $500?"


def test_keyboard_tab_enter_escape(browser_page, host_page, shop_widget):
    page = browser_page()
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).wait_for()
    for _ in range(10):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => { const h = document.activeElement; return h && h.tagName === "
                                "'SWITCHBOARD-WIDGET' ? h.shadowRoot.activeElement.className : null }")
        if focused == "lau":
            break
    assert focused == "lau"
    page.keyboard.press("Enter")
    assert page.locator(shadow(".pn")).is_visible()
    assert page.locator(shadow(".lau")).get_attribute("aria-expanded") == "true"
    active = page.evaluate("() => document.querySelector('switchboard-widget').shadowRoot.activeElement.tagName")
    assert active == "TEXTAREA"
    page.keyboard.press("Escape")
    assert not page.locator(shadow(".pn")).is_visible()
    active = page.evaluate("() => document.querySelector('switchboard-widget').shadowRoot.activeElement.className")
    assert active == "lau"
    assert page.locator(shadow(".lg")).get_attribute("aria-live") == "polite"


def test_inline_mode_from_data_attributes(browser_page, host_page, shop_widget, fake_n8n, artifacts_dir):
    fake_n8n.reply(json={"output": "Inline works. Try `code` and [our site](https://shop.example.com)."})
    page = browser_page(viewport={"width": 1100, "height": 900})
    page.goto(host_page(shop_widget.license.key, attrs='data-mode="inline" data-target="#chat-here"',
                        body='<main style="max-width:720px;margin:0 auto"><div id="chat-here"></div></main>'))
    panel = page.locator(shadow(".pn"))
    panel.wait_for()
    assert page.locator(shadow(".lau")).count() == 0
    assert page.evaluate("() => document.querySelector('#chat-here > switchboard-widget') !== null")
    page.locator(shadow("textarea")).fill("Hello inline")
    page.keyboard.press("Enter")
    page.locator(shadow(".m.a code")).wait_for()
    page.wait_for_timeout(400)  # let the entry animations settle
    page.screenshot(path=os.path.join(artifacts_dir, "embed-inline.png"), full_page=True)


def test_mobile_viewport_gets_a_fullscreen_panel(browser_page, host_page, shop_widget, fake_n8n, artifacts_dir):
    fake_n8n.reply(json={"output": "On mobile the panel fills the screen.", "ui": PRODUCTS})
    # Reduced motion: no slide-in animation, so the box is measured at rest.
    page = browser_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                        reduced_motion="reduce")
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).click()
    box = page.locator(shadow(".pn")).bounding_box()
    assert (round(box["width"]), round(box["height"]), round(box["x"]), round(box["y"])) == (390, 844, 0, 0)
    page.locator(shadow("textarea")).fill("Show phones")
    page.locator(shadow(".sd")).click()
    page.locator(shadow(".cd")).first.wait_for()
    page.wait_for_timeout(400)  # let the entry animations settle
    page.screenshot(path=os.path.join(artifacts_dir, "embed-mobile-fullscreen.png"))


def test_dark_scheme(browser_page, host_page, shop_widget, owner, fake_n8n, artifacts_dir):
    publish(shop_widget, owner, config={"appearance": {"n8n": {"color_scheme": "dark", "primary_color": "#7c3aed",
                                                                "bubble_user_color": "#7c3aed"}},
                                        "behaviour": {"disclaimer": "AI can make mistakes."}})
    fake_n8n.reply(json={"output": "Dark mode reply with a list:\n1. First\n2. Second", "ui": PRODUCTS})
    page = browser_page(viewport={"width": 1280, "height": 860})
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).click()
    page.locator(shadow("textarea")).fill("Dark?")
    page.keyboard.press("Enter")
    page.locator(shadow(".cd")).first.wait_for()
    bg = page.evaluate("() => getComputedStyle(document.querySelector('switchboard-widget').shadowRoot"
                       ".querySelector('.pn')).backgroundColor")
    assert bg == "rgb(15, 23, 42)"
    page.wait_for_timeout(400)  # let the entry animations settle
    page.screenshot(path=os.path.join(artifacts_dir, "embed-dark.png"))


def test_foreign_origin_logs_one_error_and_renders_nothing(browser_page, host_page, agency_a, owner, fake_n8n):
    license = LicenseFactory(agency=agency_a, allowed_domains=["shop.example.com"])
    publish(WidgetFactory(license=license), owner, config=n8n_config(fake_n8n.webhook))
    page = browser_page()
    page.goto(host_page(license.key))
    page.wait_for_function("() => window.SwitchboardWidgets && window.SwitchboardWidgets[0].failed")
    assert page.locator("switchboard-widget").count() == 0
    errors = switchboard_errors(page)
    assert len(errors) == 1
    assert "not on the license's allowed domains" in errors[0]
    assert fake_n8n.requests == []


def test_suspended_license_renders_nothing(browser_page, host_page, shop_widget):
    """The loader answers 403 (its JS body logs the reason when run). Browsers do not execute a classic
    script served with a non-2xx status, so on the page the visible trace is the browser's own
    "Failed to load resource: ... 403" line; nothing of ours runs and nothing is rendered."""
    license_suspend(license=shop_widget.license)
    page = browser_page()
    with page.expect_response(lambda r: "chat-widget.js" in r.url) as info:
        page.goto(host_page(shop_widget.license.key))
    assert info.value.status == 403
    page.wait_for_load_state("load")
    page.wait_for_timeout(300)
    assert page.locator("switchboard-widget").count() == 0
    assert page.evaluate("() => typeof window.SwitchboardWidget") == "undefined"
    assert any("403" in text for kind, text in page.console if kind == "error"), page.console
    assert page.evaluate("() => document.body.children.length") == 3  # h1, p, script: untouched


def test_chatkit_widget_is_shown_in_an_iframe(browser_page, host_page, license_a, owner):
    widget = publish(WidgetFactory(license=license_a, provider="chatkit"), owner)
    page = browser_page()
    page.goto(host_page(license_a.key, query=f"?widget={widget.public_id}"))
    page.locator(shadow(".lau")).click()
    frame = page.locator(shadow("iframe"))
    frame.wait_for(state="attached")
    src = frame.get_attribute("src")
    assert src.endswith(f"/widget/chatkit/{license_a.key}?widget={widget.public_id}")
    assert page.locator(shadow("textarea")).count() == 0


VOICE_TEST_DOUBLE = """
window.SwitchboardVoice = { create(api) {
  window.voiceCalls = []; window.voiceApi = api;
  return {
    start() { api.setVoiceState('connecting'); setTimeout(() => { api.setVoiceState('listening');
      api.setPartial('user', 'do you have pho'); }, 50); return Promise.resolve(); },
    stop(reason) { window.voiceCalls.push(['stop', reason]); },
    setMuted(m) { window.voiceCalls.push(['mute', m]); },
    sendText(t) { window.voiceCalls.push(['text', t]); api.addMessage({role: 'user', text: t});
      api.addMessage({role: 'assistant', text: 'Voice answer'});
      api.renderEvent({type: 'ui.meeting_link', url: 'https://cal.example.com/x', title: 'Book a demo'}); },
  };
} };
"""


def test_voice_contract_with_a_test_double(browser_page, host_page, shop_widget, owner, fake_n8n, live_server):
    publish(shop_widget, owner, config={"voice": {"enabled": True}})
    page = browser_page()
    page.route("**/static/widget/voice.js", lambda route: route.fulfill(
        status=200, content_type="application/javascript", body=VOICE_TEST_DOUBLE))
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).click()
    page.locator(shadow(".mc")).click()
    page.locator(shadow(".vb[data-s=listening]")).wait_for()
    assert page.locator(shadow(".vl")).inner_text() == "Listening…"
    assert page.locator(shadow(".pt")).inner_text() == "do you have pho"
    api = page.evaluate("() => ({base: voiceApi.baseUrl, key: voiceApi.licenseKey, widget: voiceApi.widgetId,"
                        " visitor: voiceApi.visitorId, voice: voiceApi.config.voice.enabled,"
                        " root: voiceApi.root === document.querySelector('switchboard-widget').shadowRoot})")
    assert api == {"base": live_server.url, "key": shop_widget.license.key, "widget": shop_widget.public_id,
                   "visitor": api["visitor"], "voice": True, "root": True}
    page.locator(shadow("textarea")).fill("typed during the call")
    page.keyboard.press("Enter")
    page.locator(shadow("text=Voice answer")).wait_for()
    assert page.locator(shadow(".pt")).count() == 0
    assert page.locator(shadow(".cdw a")).get_attribute("href") == "https://cal.example.com/x"
    page.locator(shadow(".vb button:not(.hu)")).click()  # mute
    page.locator(shadow(".hu")).click()  # hang up
    calls = page.evaluate("() => voiceCalls")
    assert calls == [["text", "typed during the call"], ["mute", True], ["stop", "user"]]
    assert not page.locator(shadow(".vb")).is_visible()
    assert fake_n8n.sent == []  # composer text went to the call, not to n8n


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
