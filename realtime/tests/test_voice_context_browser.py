"""Chromium, the real widget on a customer page (one-line loader + the API stub): the page identifies its
user with a valid hash and sets its context, the visitor starts a relayed voice call — the fake Realtime
server's one session.update carries the verified identity and the page; the call's log_lead tool fires the
page's `lead` event (its source only) and the turns fire `message` events."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext

import pytest

from realtime.tests.voice_browser import IDENTIFIED, identify_head, launch_with_mic, speech_wav
from widgets.config_schema import config_normalize
from widgets.models import Conversation, Lead
from widgets.tests.factories import publish

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>My account</title>
<link rel="icon" href="data:,"></head><body><h1>Phone Shop</h1>
__IDENTIFY__<script>window.sbEvents = [];
["message", "lead", "error", "voice:start"].forEach(function (type) {
  Switchboard("on", type, function (e) { window.sbEvents.push(Object.assign({keys: Object.keys(e).sort()}, e)); });
});</script>
<script src="__BASE__/api/widget/__KEY__/chat-widget.js" async></script></body></html>"""


def test_a_relayed_call_carries_the_verified_identity_and_the_page_and_fires_lead(
    playwright_driver,
    voice_widget,
    owner,
    fake_realtime_thread,
    asgi_live_server,
    customer_site,
    tmp_path,
    artifacts_dir,
):
    from playwright.sync_api import expect

    wav = speech_wav(tmp_path)
    voice_widget.config = config_normalize(
        {"behaviour": {"page_context": True}, "voice": {"consent_required": False}}, base=voice_widget.config
    )
    voice_widget.save()
    publish(voice_widget, owner)
    fake_realtime_thread.tool_call = {
        "name": "log_lead",
        "arguments": json.dumps({"name": "Ana Lima", "email": "ana@client.example"}),
    }
    html = (
        PAGE.replace("__BASE__", asgi_live_server)
        .replace("__KEY__", voice_widget.license.key)
        .replace("__IDENTIFY__", identify_head(voice_widget, owner))
    )
    (customer_site.dir / "account.html").write_text(html)
    w = "switchboard-widget >> "
    with nullcontext(playwright_driver) as p:
        browser = launch_with_mic(p, wav, "--autoplay-policy=no-user-gesture-required")
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(customer_site.origin + "/account.html")
            page.wait_for_function("() => window.SwitchboardWidgets && window.SwitchboardWidgets[0].identityToken")
            page.locator(w + ".lau").click()
            page.locator(w + ".mc").click()
            page.wait_for_function("() => window.sbEvents.some(e => e.type === 'lead')", timeout=20000)
            expect(page.locator(w + ".m.a:not(.pt) .b").last).to_have_text("We have two phones.", timeout=10000)
            page.locator(w + ".hu").click()
        except Exception:
            page.screenshot(path=os.path.join(artifacts_dir, "voice-context-failure.png"))
            raise
        events = page.evaluate("window.sbEvents")
        browser.close()
    assert not errors
    [update] = fake_realtime_thread.of_type("session.update")
    instructions = update["session"]["instructions"]
    assert IDENTIFIED in instructions
    assert f"- URL: {customer_site.origin}/account.html" in instructions
    assert "- Title: My account" in instructions and '- Site context (JSON): {"cart_total": 899.5}' in instructions
    leads = [e for e in events if e["type"] == "lead"]
    assert [(e["source"], e["keys"]) for e in leads] == [("voice", ["source", "type", "widget"])]
    assert "ana@client.example" not in json.dumps(events)
    messages = [(e["role"], e["text"]) for e in events if e["type"] == "message"]
    assert ("visitor", "Do you have phones under 500 dollars?") in messages
    assert not [e for e in events if e["type"] == "error"]
    conversation = Conversation.objects.get(widget=voice_widget, channel="voice")
    assert conversation.identity["verified"] is True and conversation.identity["user_id"] == "42"
    assert Lead.objects.get().source == "voice"
