"""The page's JavaScript API (window.Switchboard, issue 15.1) on a customer's page with two widgets.

The page pastes the snippets the Embed code tab prints (the stub first), calls the API before the
loader has run, and listens to every event; a real Chromium, the live server, a fake n8n.
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import urlsplit

import pytest

from widgets.tests.conftest import n8n_config, publish
from widgets.tests.factories import WidgetFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EVENTS = ["ready", "open", "close", "message", "lead", "voice:start", "voice:end", "error"]

# voice.js is another issue's file: the widget's side of the events is tested with the same double as
# test_embed_browser.test_voice_contract_with_a_test_double.
VOICE_TEST_DOUBLE = """
window.SwitchboardVoice = { create(api) {
  return {
    start() { api.setVoiceState('connecting'); setTimeout(() => api.setVoiceState('listening'), 50);
      return Promise.resolve(); },
    stop() {}, setMuted() {},
    sendText(t) { api.addMessage({role: 'user', text: t}); api.addMessage({role: 'assistant', text: 'Voice answer'}); },
  };
} };
"""

TRADE_IN = {
    "type": "ui.trade_in_form",
    "device": "Pixel 6",
    "devices": [],
    "fields": [
        {"name": "device", "label": "Device", "type": "text", "required": True},
        {"name": "name", "label": "Your name", "type": "text", "required": True},
        {"name": "email", "label": "Email", "type": "email", "required": True},
    ],
}


def printed_snippet(client, widget, live_url: str) -> str:
    response = client.get(f"/app/widgets/{widget.public_id}/embed/", HTTP_HOST=urlsplit(live_url).netloc)
    assert response.status_code == 200
    match = re.search(r'<pre id="snippet-script">(.*?)</pre>', response.content.decode(), re.S)
    return html.unescape(match.group(1))


def shadow_of(widget_id: str, selector: str) -> str:
    return f"switchboard-widget[data-widget='{widget_id}'] >> {selector}"


def wait_for(page, expression: str, arg=None) -> None:
    page.wait_for_function(expression, arg=arg, timeout=10_000)


def events_of(page, **match) -> list[dict]:
    return [e for e in page.evaluate("() => events") if all(e.get(k) == v for k, v in match.items())]


@pytest.fixture
def two_widgets(client, owner, license_a, fake_n8n):
    client.force_login(owner)
    sales = publish(
        WidgetFactory(license=license_a, name="Sales"),
        owner,
        config={**n8n_config(fake_n8n.webhook), "appearance": {"n8n": {"title": "Sales desk"}}},
    )
    support = publish(
        WidgetFactory(license=license_a, name="Support"),
        owner,
        config={
            **n8n_config(fake_n8n.webhook),
            "appearance": {"n8n": {"title": "Support desk"}},
            "embed": {"position": "bottom-left"},
            "voice": {"enabled": True},
        },
    )
    return sales, support


def test_calls_before_load_are_kept_and_every_method_and_event_works_per_widget(
    client, browser_contexts, customer_site, live_server, two_widgets, fake_n8n
):
    sales, support = two_widgets
    sales_tag = printed_snippet(client, sales, live_server.url)
    support_tag = printed_snippet(client, support, live_server.url)
    assert sales_tag.startswith("<script>window.Switchboard||") and "</script>\n<script src=" in sales_tag
    calls = f"""<script>
window.events = [];
window.loadedBeforeCalls = !!window.SwitchboardWidget;
{json.dumps(EVENTS)}.forEach(function (name) {{ Switchboard.on(name, function (e) {{ events.push(e); }}); }});
Switchboard.widget("{sales.public_id}").open();
Switchboard.widget("{support.public_id}").send("queued before load");
</script>"""
    url = customer_site.page(
        "api.html",
        f"""<!doctype html><html><head><meta charset="utf-8"><title>Shop</title></head>
<body><h1>Shop</h1>{sales_tag}{calls}{support_tag}</body></html>""",
    )
    page = browser_contexts(viewport={"width": 1280, "height": 900}).new_page()
    page.route(
        "**/static/widget/voice*.js*",
        lambda route: route.fulfill(status=200, content_type="application/javascript", body=VOICE_TEST_DOUBLE),
    )
    console = []
    page.on("console", lambda m: m.type == "error" and console.append(m.text))
    page.goto(url)

    # The queue: both calls were made before the bundle existed, and both ran on their own widget.
    wait_for(page, "() => events.filter(e => e.type === 'ready').length === 2")
    assert page.evaluate("() => loadedBeforeCalls") is False
    assert sorted(e["widget"] for e in events_of(page, type="ready")) == sorted([sales.public_id, support.public_id])
    page.locator(shadow_of(sales.public_id, ".pn")).wait_for(state="visible")
    assert events_of(page, type="open") == [{"type": "open", "widget": sales.public_id}]
    assert page.locator(shadow_of(support.public_id, ".pn")).is_hidden()  # send() does not open
    wait_for(page, "() => events.some(e => e.type === 'message' && e.role === 'assistant')")
    assert events_of(page, type="message") == [
        {"type": "message", "widget": support.public_id, "role": "visitor", "text": "queued before load"},
        {"type": "message", "widget": support.public_id, "role": "assistant", "text": "Hello from n8n"},
    ]
    [sent] = fake_n8n.sent
    assert sent["chatInput"] == "queued before load"
    support_session = sent["sessionId"]

    # close / toggle on one widget, then on every widget of the page.
    page.evaluate(f"() => Switchboard.widget('{sales.public_id}').close()")
    page.locator(shadow_of(sales.public_id, ".pn")).wait_for(state="hidden")
    page.evaluate("() => Switchboard.toggle()")
    page.locator(shadow_of(sales.public_id, ".pn")).wait_for(state="visible")
    page.locator(shadow_of(support.public_id, ".pn")).wait_for(state="visible")
    page.evaluate("() => Switchboard('close')")  # the function form
    page.locator(shadow_of(support.public_id, ".pn")).wait_for(state="hidden")
    toggles = [(e["type"], e["widget"]) for e in page.evaluate("() => events") if e["type"] in ("open", "close")]
    assert toggles[:2] == [("open", sales.public_id), ("close", sales.public_id)]
    # Page-wide calls reach both widgets (in the order their loaders ran, which async tags do not fix).
    both = {sales.public_id, support.public_id}
    assert [t[0] for t in toggles[2:]] == ["open", "open", "close", "close"]
    assert {t[1] for t in toggles[2:4]} == both and {t[1] for t in toggles[4:]} == both

    # A visitor's own message on the page is an event too; off() stops a handler.
    page.evaluate(
        "() => { window.offCalls = 0; window.offFn = () => offCalls++; Switchboard.on('message', offFn);"
        " Switchboard.off('message', offFn); }"
    )
    page.evaluate(f"() => Switchboard.widget('{sales.public_id}').send('from the page')")
    wait_for(page, "(id) => events.filter(e => e.type === 'message' && e.widget === id).length === 2", sales.public_id)
    assert events_of(page, type="message", widget=sales.public_id) == [
        {"type": "message", "widget": sales.public_id, "role": "visitor", "text": "from the page"},
        {"type": "message", "widget": sales.public_id, "role": "assistant", "text": "Hello from n8n"},
    ]
    assert page.evaluate("() => offCalls") == 0
    assert {b["chatInput"]: b["sessionId"] != support_session for b in fake_n8n.sent} == {
        "queued before load": False,
        "from the page": True,
    }

    # reset: a new conversation (a new session for n8n), the old messages gone from the log.
    page.evaluate(f"() => Switchboard.widget('{support.public_id}').reset()")
    page.evaluate(f"() => Switchboard.widget('{support.public_id}').send('after reset')")
    wait_for(page, "() => events.filter(e => e.type === 'message' && e.role === 'assistant').length === 3")
    assert fake_n8n.sent[-1]["chatInput"] == "after reset"
    assert fake_n8n.sent[-1]["sessionId"] != support_session
    support_log = page.locator(shadow_of(support.public_id, ".m.u .b")).all_inner_texts()
    assert support_log == ["after reset"]

    # setLocale: the texts of that locale, the conversation kept.
    page.evaluate(f"() => Switchboard.widget('{sales.public_id}').setLocale('de')")
    page.locator(shadow_of(sales.public_id, "textarea[placeholder='Nachricht eingeben…']")).wait_for(state="attached")
    assert page.locator(shadow_of(sales.public_id, ".m.u .b")).all_inner_texts() == ["from the page"]
    assert page.locator(shadow_of(support.public_id, "textarea")).get_attribute("placeholder") == "Type your message…"

    # lead: a trade-in form sent from the widget.
    fake_n8n.reply(json={"output": "Tell me about your phone:", "ui": [TRADE_IN]})
    page.evaluate(f"() => Switchboard.widget('{support.public_id}').open()")
    page.evaluate(f"() => Switchboard.widget('{support.public_id}').send('trade in')")
    form = page.locator(shadow_of(support.public_id, "form.fm"))
    form.wait_for()
    form.locator("input[name=name]").fill("Ada Lovelace")
    form.locator("input[name=email]").fill("ada@example.com")
    form.locator("button").click()
    wait_for(page, "() => events.some(e => e.type === 'lead')")
    assert events_of(page, type="lead") == [{"type": "lead", "widget": support.public_id, "source": "trade_in_form"}]

    # voice:start / voice:end around a call; what was said comes as message events.
    page.locator(shadow_of(support.public_id, ".mc")).click()
    wait_for(page, "() => events.some(e => e.type === 'voice:start')")
    page.locator(shadow_of(support.public_id, "textarea")).fill("spoken")
    page.locator(shadow_of(support.public_id, "textarea")).press("Enter")
    page.locator(shadow_of(support.public_id, ".hu")).click()
    wait_for(page, "() => events.some(e => e.type === 'voice:end')")
    assert [e for e in page.evaluate("() => events") if e["type"].startswith("voice")] == [
        {"type": "voice:start", "widget": support.public_id},
        {"type": "voice:end", "widget": support.public_id, "reason": "ended"},
    ]
    assert events_of(page, type="message", widget=support.public_id)[-2:] == [
        {"type": "message", "widget": support.public_id, "role": "visitor", "text": "spoken"},
        {"type": "message", "widget": support.public_id, "role": "assistant", "text": "Voice answer"},
    ]

    # error: a wrong argument names the widget and a reason code; an unknown method names none.
    page.evaluate(f"() => Switchboard.widget('{sales.public_id}').send('')")
    page.evaluate("() => Switchboard('fly')")
    wait_for(page, "() => events.filter(e => e.type === 'error').length === 2")
    errors = events_of(page, type="error")
    assert [(e["widget"], e["code"]) for e in errors] == [
        (sales.public_id, "invalid_argument"),
        (None, "unknown_method"),
    ]
    assert errors[0]["message"] == "send(text) needs 1 to 4000 characters of text."

    # Nothing of the session, the visitor id or the license key in any event.
    keys = {key for event in page.evaluate("() => events") for key in event}
    assert keys == {"type", "widget", "role", "text", "source", "reason", "code", "message"}
    dump = json.dumps(page.evaluate("() => events"))
    visitor = page.evaluate("() => JSON.parse(localStorage.getItem('sb:visitor'))")
    for secret in (sales.license.key, visitor, support_session, fake_n8n.webhook):
        assert secret not in dump
    assert console == [
        'Switchboard: Switchboard("fly") is not a method; use one of open, close, toggle, send, '
        "reset, setLocale, setContext, identify, on, off. (unknown_method)"
    ]


def test_a_refused_page_hears_an_error_event_with_the_reason(
    browser_contexts, customer_site, live_server, owner, license_a
):
    license = license_a
    license.allowed_domains = ["shop.example.com"]  # not this page's localhost
    license.save()
    widget = publish(WidgetFactory(license=license), owner, config=n8n_config("https://n8n.example.com/webhook/x"))
    url = customer_site.page(
        "refused.html",
        f"""<!doctype html><html><body><script>window.events = [];
window.Switchboard||(function(w){{var q=[];var s=w.Switchboard=function(){{q.push(["",[].slice.call(arguments)])}};s.q=q}})(window);
Switchboard("on", "error", function (e) {{ events.push(e); }});
Switchboard("open");
</script><script src="{live_server.url}/api/widget/{license.key}/chat-widget.js" async></script></body></html>""",
    )
    page = browser_contexts().new_page()
    page.goto(url)
    wait_for(page, "() => events.length === 1")
    [event] = page.evaluate("() => events")
    assert (event["widget"], event["code"]) == (widget.public_id, "domain_not_allowed")
    assert event["message"].startswith(f'this page\'s host "{customer_site.host}" was refused')
    assert page.locator("switchboard-widget").count() == 0


def test_page_context_reaches_the_fake_n8n_only_from_the_widget_that_sends_it(
    client, browser_contexts, customer_site, live_server, two_widgets, owner, fake_n8n
):
    sales, support = two_widgets
    sales = publish(sales, owner, config={"behaviour": {"page_context": True}})  # support keeps it off
    tags = printed_snippet(client, sales, live_server.url) + printed_snippet(client, support, live_server.url)
    landing = customer_site.page(
        "landing.html", '<!doctype html><html><body><a id="go" href="/phones.html?ref=ad">Phones</a></body></html>'
    )
    customer_site.page(
        "phones.html",
        f"""<!doctype html><html><head><meta charset="utf-8"><title>Phones · Acme</title></head><body>
<script>
window.errors = [];
window.Switchboard||(function(w){{var q=[];var s=w.Switchboard=function(){{q.push(["",[].slice.call(arguments)])}};s.q=q}})(window);
Switchboard("on", "error", function (e) {{ errors.push(e); }});
Switchboard("setContext", {{plan: "pro", cart: {{items: 2, total: 899.5}}}});
</script>{tags}</body></html>""",
    )
    page = browser_contexts().new_page()
    page.goto(landing)
    page.locator("#go").click()
    page.locator(shadow_of(sales.public_id, ".lau")).wait_for()
    page.locator(shadow_of(support.public_id, ".lau")).wait_for()
    # Oversize and non-object contexts are refused in the page with a reason code (and kept out).
    page.evaluate("() => Switchboard.setContext({notes: 'x'.repeat(3000)})")
    page.evaluate("() => Switchboard.setContext([1, 2])")
    assert [e["code"] for e in page.evaluate("() => errors")] == ["context_too_large", "invalid_context"]

    for widget in (sales, support):  # one after the other: SQLite takes one writer at a time
        page.evaluate(f"() => Switchboard.widget('{widget.public_id}').send('Which phone?')")
        page.locator(shadow_of(widget.public_id, ".m.a >> text=Hello from n8n")).wait_for(state="attached")
    by_widget = {body["sessionId"]: body["metadata"] for body in fake_n8n.sent}
    sessions = page.evaluate(
        "(ids) => ids.map(id => JSON.parse(localStorage.getItem('sb:' + id + ':session')))",
        [sales.public_id, support.public_id],
    )
    visitor = page.evaluate("() => JSON.parse(localStorage.getItem('sb:visitor'))")
    assert by_widget[sessions[0]] == {
        "visitorId": visitor,
        "page": f"{customer_site.origin}/phones.html?ref=ad",
        "title": "Phones · Acme",
        "referrer": landing,
        "context": {"plan": "pro", "cart": {"items": 2, "total": 899.5}},
    }
    assert by_widget[sessions[1]] == {"visitorId": visitor}  # page context off: nothing else is sent
