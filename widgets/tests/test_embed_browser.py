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
    {
        "type": "ui.product_cards",
        "products": [
            {
                "id": "1",
                "title": "Pixel 8a",
                "description": "6.1-inch, great camera",
                "price": "449.00",
                "currency": "USD",
                "image_url": "",
                "url": "https://shop.example.com/pixel-8a",
                "in_stock": True,
            },
            {
                "id": "2",
                "title": "Galaxy A55",
                "description": "Long battery life",
                "price": "399.00",
                "currency": "USD",
                "image_url": "",
                "url": "https://shop.example.com/galaxy-a55",
                "in_stock": False,
            },
        ],
    },
]


def page_html(script_src: str, attrs: str = "", body: str = "") -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Acme Shop</title>
<style>{HOSTILE_CSS}</style></head><body>
<h1>Acme Phones</h1><p>Customer page with hostile CSS.</p>{body}
<script src="{script_src}" {attrs}></script>
</body></html>"""


@pytest.fixture
def host_page(customer_site, live_server):
    def make(key: str, attrs: str = "", body: str = "", name: str = "index.html", query: str = "") -> str:
        src = f"{live_server.url}/api/widget/{key}/chat-widget.js{query}"
        return customer_site.page(name, page_html(src, attrs, body))

    return make


@pytest.fixture
def browser_page(browser_contexts):
    def make(**kwargs):
        page = browser_contexts(**kwargs).new_page()
        page.console = []  # type: ignore[attr-defined]
        page.on("console", lambda m: page.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: page.console.append(("pageerror", str(e))))
        return page

    return make


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
    page.wait_for_function(
        "() => document.querySelector('switchboard-widget').shadowRoot.querySelectorAll('.m.a').length >= 3"
    )
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
    fake_n8n.reply(
        stream=[{"type": "begin"}]
        + [{"type": "item", "content": w} for w in ["Streaming ", "works ", "*nicely*."]]
        + [{"type": "end"}],
        delay=0.05,
    )
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
        focused = page.evaluate(
            "() => { const h = document.activeElement; return h && h.tagName === "
            "'SWITCHBOARD-WIDGET' ? h.shadowRoot.activeElement.className : null }"
        )
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
    page.goto(
        host_page(
            shop_widget.license.key,
            attrs='data-mode="inline" data-target="#chat-here"',
            body='<main style="max-width:720px;margin:0 auto"><div id="chat-here"></div></main>',
        )
    )
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
    page = browser_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, reduced_motion="reduce")
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
    publish(
        shop_widget,
        owner,
        config={
            "appearance": {"n8n": {"color_scheme": "dark", "primary_color": "#7c3aed", "bubble_user_color": "#7c3aed"}},
            "behaviour": {"disclaimer": "AI can make mistakes."},
        },
    )
    fake_n8n.reply(json={"output": "Dark mode reply with a list:\n1. First\n2. Second", "ui": PRODUCTS})
    page = browser_page(viewport={"width": 1280, "height": 860})
    page.goto(host_page(shop_widget.license.key, attrs='data-position="bottom-left"'))
    page.locator(shadow(".lau")).click()
    assert page.locator(shadow(".lau")).bounding_box()["x"] < 100  # data-position overrides the config
    assert page.locator(shadow(".pn")).bounding_box()["x"] < 100
    page.locator(shadow("textarea")).fill("Dark?")
    page.keyboard.press("Enter")
    page.locator(shadow(".cd")).first.wait_for()
    bg = page.evaluate(
        "() => getComputedStyle(document.querySelector('switchboard-widget').shadowRoot"
        ".querySelector('.pn')).backgroundColor"
    )
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


def test_voice_contract_with_a_test_double(
    browser_page, host_page, shop_widget, owner, fake_n8n, live_server, artifacts_dir
):
    publish(shop_widget, owner, config={"voice": {"enabled": True}})
    page = browser_page(viewport={"width": 1280, "height": 860})
    page.route(
        "**/static/widget/voice*.js*",
        lambda route: route.fulfill(status=200, content_type="application/javascript", body=VOICE_TEST_DOUBLE),
    )
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).click()
    page.locator(shadow(".mc")).click()
    page.locator(shadow(".vb[data-s=listening]")).wait_for()
    assert page.locator(shadow(".vl")).inner_text() == "Listening…"
    assert page.locator(shadow(".pt")).inner_text() == "do you have pho"
    api = page.evaluate(
        "() => ({base: voiceApi.baseUrl, key: voiceApi.licenseKey, widget: voiceApi.widgetId,"
        " visitor: voiceApi.visitorId, voice: voiceApi.config.voice.enabled,"
        " root: voiceApi.root === document.querySelector('switchboard-widget').shadowRoot})"
    )
    assert api == {
        "base": live_server.url,
        "key": shop_widget.license.key,
        "widget": shop_widget.public_id,
        "visitor": api["visitor"],
        "voice": True,
        "root": True,
    }
    page.locator(shadow("textarea")).fill("typed during the call")
    page.keyboard.press("Enter")
    page.locator(shadow("text=Voice answer")).wait_for()
    assert page.locator(shadow(".pt")).count() == 0
    assert page.locator(shadow(".cdw a")).get_attribute("href") == "https://cal.example.com/x"
    page.wait_for_timeout(300)
    page.screenshot(path=os.path.join(artifacts_dir, "embed-voice-call.png"))
    page.locator(shadow(".vb button:not(.hu)")).click()  # mute
    page.locator(shadow(".hu")).click()  # hang up
    calls = page.evaluate("() => voiceCalls")
    assert calls == [["text", "typed during the call"], ["mute", True], ["stop", "user"]]
    assert not page.locator(shadow(".vb")).is_visible()
    assert fake_n8n.sent == []  # composer text went to the call, not to n8n
    page.locator(shadow("textarea")).fill("back to chat")
    page.keyboard.press("Enter")
    page.locator(shadow("text=Hello from n8n")).wait_for()
    assert [b["chatInput"] for b in fake_n8n.sent] == ["back to chat"]


def test_trade_in_form_submits_a_lead(browser_page, host_page, shop_widget, fake_n8n, artifacts_dir):
    from widgets.models import Lead

    fake_n8n.reply(
        json={
            "output": "Sure, tell me about your phone:",
            "ui": [
                {
                    "type": "ui.trade_in_form",
                    "device": "Pixel 6",
                    "devices": ["Pixel 6", "iPhone 12"],
                    "fields": [
                        {"name": "device", "label": "Device", "type": "text", "required": True},
                        {
                            "name": "condition",
                            "label": "Condition",
                            "type": "select",
                            "required": True,
                            "options": ["Like new", "Good", "Fair", "Broken"],
                        },
                        {"name": "name", "label": "Your name", "type": "text", "required": True},
                        {"name": "email", "label": "Email", "type": "email", "required": True},
                        {"name": "phone", "label": "Phone", "type": "tel", "required": False},
                    ],
                },
                {
                    "type": "ui.demo_clip",
                    "topic": "trade-in",
                    "title": "How trade-ins work",
                    "url": "https://cdn.example.com/tradein.mp4",
                },
            ],
        }
    )
    page = browser_page(viewport={"width": 1280, "height": 900})
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).click()
    page.locator(shadow("textarea")).fill("I want to trade in my phone")
    page.keyboard.press("Enter")
    form = page.locator(shadow("form.fm"))
    form.wait_for()
    assert form.locator("input[name=device]").input_value() == "Pixel 6"
    form.locator("button").click()  # condition missing: the form says which field
    assert "Condition" in form.locator(".fe").inner_text()
    form.locator("select[name=condition]").select_option("Good")
    form.locator("input[name=name]").fill("Ada Lovelace")
    form.locator("input[name=email]").fill("ada@example.com")
    page.wait_for_timeout(300)
    page.screenshot(path=os.path.join(artifacts_dir, "embed-trade-in-form.png"))
    form.locator("button").click()
    page.locator(shadow("text=Thanks! We'll be in touch")).wait_for()
    lead = Lead.objects.get()
    assert (lead.source, lead.name, lead.email, lead.interest) == (
        "trade_in_form",
        "Ada Lovelace",
        "ada@example.com",
        "Pixel 6",
    )
    assert lead.data == {"device": "Pixel 6", "condition": "Good"}
    assert lead.widget_id == shop_widget.pk
    assert lead.conversation is not None and lead.conversation.session_id == fake_n8n.sent[-1]["sessionId"]
    assert page.locator(shadow(".cdw video")).get_attribute("src") == "https://cdn.example.com/tradein.mp4"


def test_voice_consent_is_asked_inline_once(browser_page, host_page, shop_widget, owner):
    publish(
        shop_widget,
        owner,
        config={
            "voice": {"enabled": True, "consent_required": True, "consent_text": "Calls are transcribed by an AI."}
        },
    )
    page = browser_page()
    page.route(
        "**/static/widget/voice*.js*",
        lambda route: route.fulfill(status=200, content_type="application/javascript", body=VOICE_TEST_DOUBLE),
    )
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).click()
    page.locator(shadow(".mc")).click()
    consent = page.locator(shadow("[aria-label='Voice call consent']"))
    assert "Calls are transcribed by an AI." in consent.inner_text()
    assert page.evaluate("() => typeof window.SwitchboardVoice") == "undefined"  # nothing loaded yet
    consent.locator("text=Start the call").click()
    page.locator(shadow(".vb[data-s=listening]")).wait_for()
    page.locator(shadow(".hu")).click()
    page.locator(shadow(".mc")).click()  # second call: no consent again
    page.locator(shadow(".vb[data-s=listening]")).wait_for()
    assert page.locator(shadow("[aria-label='Voice call consent']")).count() == 0


def test_returning_visitor_gets_history_from_n8n(browser_page, host_page, shop_widget, fake_n8n):
    page = browser_page()
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).click()
    page.locator(shadow(".lg")).wait_for()
    assert fake_n8n.requests == []  # a first visit asks n8n for nothing
    page.locator(shadow("textarea")).fill("Remember me")
    page.keyboard.press("Enter")
    page.locator(shadow("text=Hello from n8n")).wait_for()
    session = fake_n8n.sent[-1]["sessionId"]
    fake_n8n.history.extend(
        [
            {"id": ["langchain_core", "messages", "HumanMessage"], "kwargs": {"content": "Earlier question"}},
            {"id": ["langchain_core", "messages", "AIMessage"], "kwargs": {"content": "Earlier **answer**"}},
        ]
    )
    page.reload()
    page.locator(shadow(".lau")).click()
    page.locator(shadow(".m.a strong")).wait_for()
    text = page.locator(shadow(".lg")).inner_text()
    assert "Earlier question" in text and "Earlier answer" in text
    history = [r.body for r in fake_n8n.requests if r.body.get("action") == "loadPreviousSession"]
    assert history == [{"action": "loadPreviousSession", "sessionId": session, "metadata": history[0]["metadata"]}]
    assert "chatInput" not in history[0]


def test_fullpage_mode_and_a_strict_csp_page(browser_page, customer_site, live_server, shop_widget, fake_n8n):
    """data-mode=fullpage covers the viewport; the widget works under a page CSP without 'unsafe-inline'."""
    csp = (
        f"default-src 'self'; script-src {live_server.url}; connect-src {live_server.url}; "
        f"style-src 'self'; img-src * data:"
    )
    src = f"{live_server.url}/api/widget/{shop_widget.license.key}/chat-widget.js"
    url = customer_site.page(
        "csp.html",
        f"""<!doctype html><html><head>
<meta http-equiv="Content-Security-Policy" content="{csp}"></head><body><h1>Strict shop</h1>
<script src="{src}" data-mode="fullpage"></script></body></html>""",
    )
    page = browser_page(viewport={"width": 1024, "height": 700})
    page.goto(url)
    panel = page.locator(shadow(".pn"))
    panel.wait_for()
    box = panel.bounding_box()
    assert (round(box["width"]), round(box["height"])) == (1024, 700)
    assert page.locator(shadow(".lau")).count() == 0
    radius = page.evaluate(
        "() => getComputedStyle(document.querySelector('switchboard-widget').shadowRoot"
        ".querySelector('.sd')).borderRadius"
    )
    assert radius == "50%"  # our stylesheet applied despite the CSP
    page.locator(shadow("textarea")).fill("Hi")
    page.keyboard.press("Enter")
    page.locator(shadow("text=Hello from n8n")).wait_for()
    assert not [text for kind, text in page.console if "Content Security Policy" in text]


XSS_REPLIES = [
    "Hi [help](https://x.com/(https://x/autofocus/onfocus=top.pwned=1//)",
    '[a](https://x.com/_a_"onmouseover=top.pwned=1) and https://x.com/"onfocus=top.pwned=1',
    '**[b](https://x.com/**)**" autofocus onfocus=top.pwned=1 x="** `code` (https://y.com/<img src=x onerror=top.pwned=1>)',
    "[c](javascript:top.pwned=1) <script>top.pwned=1</script> <img src=x onerror=top.pwned=1>",
]


@pytest.mark.parametrize("reply", XSS_REPLIES)
def test_markdown_never_becomes_markup_or_script(browser_page, host_page, shop_widget, fake_n8n, reply):
    """Replies come from n8n or a model: whatever they say, the bubble holds text, safe links and
    emphasis only — no attribute, tag or handler an attacker chose."""
    fake_n8n.reply(json={"output": reply})
    page = browser_page()
    page.goto(host_page(shop_widget.license.key))
    page.locator(shadow(".lau")).click()
    page.locator(shadow("textarea")).fill("hello")
    page.keyboard.press("Enter")
    # Wait for the reply itself: the typing indicator is an assistant row too (counting rows raced it).
    page.wait_for_function("""() => { const root = document.querySelector('switchboard-widget').shadowRoot;
        return !root.querySelector('.ty') && root.querySelectorAll('.m.a .b').length >= 2; }""")
    found = page.evaluate("""() => {
        const root = document.querySelector('switchboard-widget').shadowRoot;
        const bubble = [...root.querySelectorAll('.m.a .b')].pop();
        const bad = [];
        for (const el of bubble.querySelectorAll('*')) {
            if (!['A', 'STRONG', 'EM', 'CODE', 'P', 'BR', 'UL', 'OL', 'LI', 'PRE'].includes(el.tagName)) bad.push(el.tagName);
            for (const attr of el.attributes) {
                if (!['href', 'target', 'rel'].includes(attr.name)) bad.push(el.tagName + '@' + attr.name);
            }
            if (el.tagName === 'A' && !/^(https?:|mailto:)/.test(el.getAttribute('href'))) bad.push('href:' + el.href);
        }
        return {bad, pwned: window.pwned === undefined ? null : window.pwned};
    }""")
    assert found == {"bad": [], "pwned": None}
