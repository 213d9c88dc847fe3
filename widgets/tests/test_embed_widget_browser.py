"""The chat widget's behaviour on a customer's page: no lost message, inline fills its target,
a stable greeting time, texts in the configured locale, a refusal that names the refused host."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from licenses.tests.factories import LicenseFactory
from widgets.tests.conftest import n8n_config, publish
from widgets.tests.factories import WidgetFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shadow(selector: str) -> str:
    return f"switchboard-widget >> {selector}"


@pytest.fixture
def shop(widget_a, owner, fake_n8n):
    return publish(widget_a, owner, config=n8n_config(fake_n8n.webhook))


@pytest.fixture
def open_page(browser_contexts, customer_site, live_server):
    """open_page(key, attrs="", body="", **context) -> a page on the customer's site with the loader tag."""

    def make(key: str, attrs: str = "", body: str = "", **context):
        page = browser_contexts(**context).new_page()
        page.console = []  # type: ignore[attr-defined]
        page.on("console", lambda m: page.console.append((m.type, m.text)))
        src = f"{live_server.url}/api/widget/{key}/chat-widget.js"
        page.goto(
            customer_site.page(
                "p.html",
                f"""<!doctype html><html><head><meta charset="utf-8"></head>
<body style="margin:0">{body}<script src="{src}" {attrs}></script></body></html>""",
            )
        )
        return page

    return make


def log_rows(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelector('switchboard-widget').shadowRoot
        .querySelectorAll('.m:not(.pt)')].filter(m => !m.querySelector('.ty'))
        .map(m => (m.classList.contains('u') ? 'user: ' : 'bot: ') + m.querySelector('.b').innerText)""")


def test_a_message_typed_while_the_bot_answers_is_queued_and_sent_after(open_page, shop, fake_n8n):
    fake_n8n.reply(sleep=1.5)  # answers "too late" after 1.5 s
    page = open_page(shop.license.key)
    page.locator(shadow(".lau")).click()
    box = page.locator(shadow("textarea"))
    box.fill("first")
    box.press("Enter")
    page.locator(shadow(".ty")).wait_for()  # the assistant is answering
    box.fill("second")
    box.press("Enter")
    # Shown at once, marked as waiting; the composer is free again; nothing sent yet.
    queued = page.locator(shadow(".m.u.q"))
    queued.wait_for()
    assert "second" in queued.inner_text() and "Sends after the current reply" in queued.inner_text()
    assert box.input_value() == ""
    # The typing indicator shows before the first request reaches the fake: wait for it to arrive,
    # then check that the queued one was not sent beside it.
    deadline = time.monotonic() + 10
    while not fake_n8n.sent and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert [b["chatInput"] for b in fake_n8n.sent] == ["first"]
    page.locator(shadow(".m.a >> text=Hello from n8n")).wait_for()
    assert [b["chatInput"] for b in fake_n8n.sent] == ["first", "second"]
    assert page.locator(shadow(".m.u.q")).count() == 0
    assert log_rows(page) == [
        "bot: Hi! How can I help?",
        "user: first",
        "bot: too late",
        "user: second",
        "bot: Hello from n8n",
    ]


def test_inline_fills_its_target_exactly(open_page, shop):
    body = (
        '<div style="padding:30px 0 0 70px"><div id="chat" style="width:600px;height:500px"></div></div>'
        '<div id="auto" style="width:400px"></div>'
    )
    page = open_page(
        shop.license.key,
        attrs='data-mode="inline" data-target="#chat"',
        body=body,
        viewport={"width": 1200, "height": 900},
        reduced_motion="reduce",
    )
    panel = page.locator(shadow(".pn"))
    panel.wait_for()
    target = page.locator("#chat").bounding_box()
    box = panel.bounding_box()
    assert (box["x"], box["y"], box["width"], box["height"]) == (target["x"], target["y"], 600, 500)
    composer = page.locator(shadow(".cp")).bounding_box()
    assert composer["y"] + composer["height"] <= target["y"] + 500
    assert page.locator(shadow(".lau")).count() == 0


def test_inline_in_a_container_without_height_takes_the_configured_height(open_page, shop, owner):
    publish(shop, owner, config={"embed": {"height": 480}})
    page = open_page(
        shop.license.key,
        attrs='data-mode="inline" data-target="#auto"',
        body='<div id="auto" style="width:400px;margin-left:50px"></div>',
        reduced_motion="reduce",
    )
    page.locator(shadow(".pn")).wait_for()
    box = page.locator(shadow(".pn")).bounding_box()
    assert (box["x"], box["width"], box["height"]) == (50, 400, 480)


def test_greeting_keeps_the_time_the_conversation_started(open_page, shop, browser_contexts):
    page = open_page(shop.license.key)
    page.clock.install(time=datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    page.reload()
    page.locator(shadow(".lau")).click()
    page.locator(shadow("textarea")).fill("hello")
    page.locator(shadow("textarea")).press("Enter")
    page.locator(shadow(".m.a >> text=Hello from n8n")).wait_for()
    times = (
        "() => [...document.querySelector('switchboard-widget').shadowRoot.querySelectorAll('.m time')]"
        ".map(t => t.dateTime)"
    )
    first = page.evaluate(times)
    page.clock.set_system_time(datetime(2026, 3, 2, 9, 0, tzinfo=UTC) + timedelta(hours=3))
    page.reload()
    page.locator(shadow(".lau")).click()
    page.locator(shadow(".m.u")).wait_for()
    again = page.evaluate(times)
    assert again == first  # greeting, question, answer: the same times as when they happened
    assert again[0] <= again[1]
    assert again[0].startswith("2026-03-02T09:0")


def test_texts_follow_the_locale_and_each_can_be_overridden(open_page, shop, owner, fake_n8n):
    publish(shop, owner, config={"behaviour": {"locale": "de-AT", "strings": {"send": "Abschicken"}}})
    fake_n8n.reply(
        json={
            "output": "Gern.",
            "ui": [
                {
                    "type": "ui.trade_in_form",
                    "device": "",
                    "devices": [],
                    "fields": [{"name": "device", "label": "Gerät", "type": "text", "required": True}],
                }
            ],
        }
    )
    page = open_page(shop.license.key)
    launcher = page.locator(shadow(".lau"))
    launcher.wait_for()
    assert launcher.get_attribute("aria-label") == "Chat öffnen: Acme Phones"
    launcher.click()
    box = page.locator(shadow("textarea"))
    assert box.get_attribute("placeholder") == "Nachricht eingeben…"
    assert page.locator(shadow(".sd")).get_attribute("aria-label") == "Abschicken"
    box.fill("Eintausch?")
    box.press("Enter")
    form = page.locator(shadow("form.fm"))
    form.wait_for()
    assert form.locator("h4").inner_text() == "Angebot für Ihr Altgerät"
    assert (
        page.evaluate("() => document.querySelector('switchboard-widget').shadowRoot.querySelector('.r').lang")
        == "de-AT"
    )
    form.locator("button").click()
    assert form.locator(".fe").inner_text() == "Bitte füllen Sie Gerät aus."


def test_refused_origin_names_the_refused_host(open_page, agency_a, owner, fake_n8n, customer_site):
    license = LicenseFactory(agency=agency_a, allowed_domains=["shop.example.com"])
    publish(WidgetFactory(license=license), owner, config=n8n_config(fake_n8n.webhook))
    page = open_page(license.key)
    page.wait_for_function("() => window.SwitchboardWidgets && window.SwitchboardWidgets[0].failed")
    errors = [text for kind, text in page.console if kind == "error" and text.startswith("Switchboard:")]
    assert len(errors) == 1
    assert f'"{customer_site.host}"' in errors[0] and "domain_not_allowed" in errors[0]
