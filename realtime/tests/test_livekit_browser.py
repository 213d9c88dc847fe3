"""The widget's LiveKit transport in Chromium: the real widget (one-line loader on another origin), the real
token endpoint, and a stand-in for LiveKit's room object (no LiveKit server runs here). The events the
stand-in delivers are made by the agent's own logic (realtime/livekit_call.py) for the call the widget
joined, so the same cards, forms and turns as the relay must render. A second test loads the vendored
livekit-client build the way the widget does."""

from __future__ import annotations

import json
import os
import re
from contextlib import nullcontext

import pytest
from livekit import api

from conftest import CHROMIUM_ARGS, chromium_path
from realtime import events
from realtime.livekit_call import LiveKitCall
from realtime.tests.conftest import KEY, SECRET, SERVER_URL
from realtime.tests.voice_browser import IDENTIFIED, identify_head
from widgets.config_schema import config_normalize
from widgets.models import Conversation, Message
from widgets.tests.factories import publish

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# LiveKit's SDK as voice-livekit.js uses it, recorded: Room(connect, registerTextStreamHandler, on,
# localParticipant.setMicrophoneEnabled/sendText, startAudio, disconnect), RoomEvent and Track.Kind.
STAND_IN = """
window.FakeLiveKit = {
  version: "stand-in",
  RoomEvent: {TrackSubscribed: "trackSubscribed", ParticipantAttributesChanged: "participantAttributesChanged",
              Disconnected: "disconnected"},
  Track: {Kind: {Audio: "audio", Video: "video"}},
  rooms: [],
};
function Room(options) {
  var self = this;
  FakeLiveKit.rooms.push(this);
  this.options = options; this.handlers = {}; this.streams = {}; this.calls = [];
  this.localParticipant = {
    setMicrophoneEnabled: function (on) { self.calls.push(["mic", on]); return Promise.resolve(); },
    sendText: function (text, o) { self.calls.push(["text", text, o.topic]); return Promise.resolve({}); },
  };
}
Room.prototype.registerTextStreamHandler = function (topic, cb) { this.streams[topic] = cb; };
Room.prototype.on = function (name, cb) { (this.handlers[name] = this.handlers[name] || []).push(cb); return this; };
Room.prototype.removeAllListeners = function () { this.handlers = {}; };
Room.prototype.connect = function (url, token) { this.url = url; this.token = token; this.calls.push(["connect"]); return Promise.resolve(); };
Room.prototype.startAudio = function () { this.calls.push(["startAudio"]); return Promise.resolve(); };
Room.prototype.disconnect = function () { this.calls.push(["disconnect"]); return Promise.resolve(); };
// What LiveKit would do when the agent speaks: a text stream per event, its state attribute, its audio track.
Room.prototype.deliver = function (evt) {
  this.streams["switchboard.voice"]({readAll: function () { return Promise.resolve(JSON.stringify(evt)); }},
                                    {identity: "agent-1"});
};
Room.prototype.agentState = function (state) {
  (this.handlers.participantAttributesChanged || []).forEach(function (cb) {
    cb({"lk.agent.state": state}, {identity: "agent-1"});
  });
};
Room.prototype.agentTrack = function () {
  var el = document.createElement("audio");
  (this.handlers.trackSubscribed || []).forEach(function (cb) {
    cb({kind: "audio", attach: function () { return el; }}, {}, {identity: "agent-1"});
  });
};
FakeLiveKit.Room = Room;
"""

WIDGET_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Phone Shop</title>
<link rel="icon" href="data:,"><style>body{font:16px system-ui;margin:40px;color:#1f2937}</style></head>
<body><h1>Phone Shop</h1><p>Great phones, fair prices.</p>
<script src="__BASE__/static/widget/voice-livekit.js"></script>
<script>__STAND_IN__
SwitchboardVoiceLiveKit.sdk = FakeLiveKit;</script>
__HEAD__<script src="__BASE__/api/widget/__KEY__/chat-widget.js" async></script>
</body></html>
"""

WATCH_VOICE_BAR = """() => {
  const vb = document.querySelector('switchboard-widget').shadowRoot.querySelector('.vb');
  window.voiceBar = [];
  new MutationObserver(() => window.voiceBar.push(vb.getAttribute('data-s')))
    .observe(vb, {attributes: true, attributeFilter: ['data-s']});
}"""

W = "switchboard-widget >> "
PRODUCT_IMAGE = "https://shop.example.com/p.png"  # Playwright CSS pierces the widget's open shadow root


def open_browser(p):
    return p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)


def watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # A failed resource is logged on the console too; it is counted once, from requestfailed / the response.
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load") else None,
    )
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    # The product image's host cannot resolve here (no internet): the card shows its placeholder.
    page.on("requestfailed", lambda r: None if r.url == PRODUCT_IMAGE else errors.append(f"failed {r.url}"))
    return errors


def deliver(page, evts: list[dict]) -> None:
    page.evaluate("(evts) => evts.forEach((e) => FakeLiveKit.rooms[0].deliver(e))", evts)


def test_widget_renders_the_agents_turns_cards_and_forms(
    playwright_driver, livekit_widget, owner, asgi_live_server, customer_site, artifacts_dir
):
    from playwright.sync_api import expect

    root, site = customer_site.dir, customer_site.origin
    # The customer's page identifies its signed-in user and sets a context: both reach the agent's dispatch.
    livekit_widget.config = config_normalize({"behaviour": {"page_context": True}}, base=livekit_widget.config)
    livekit_widget.save()
    publish(livekit_widget, owner)
    page_html = (
        WIDGET_PAGE.replace("__HEAD__", identify_head(livekit_widget, owner))
        .replace("__BASE__", asgi_live_server)
        .replace("__KEY__", livekit_widget.license.key)
        .replace("__STAND_IN__", STAND_IN)
    )
    (root / "index.html").write_text(page_html)
    with nullcontext(playwright_driver) as p:
        browser = open_browser(p)
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        errors = watch_errors(page)
        try:
            page.goto(site + "/index.html")
            page.wait_for_function("() => window.SwitchboardWidgets && window.SwitchboardWidgets[0].identityToken")
            page.locator(W + ".lau").click()
            page.locator(W + ".vb").wait_for(state="attached")
            page.evaluate(WATCH_VOICE_BAR)
            page.locator(W + ".mc").click()
            page.wait_for_function("FakeLiveKit.rooms.length === 1 && FakeLiveKit.rooms[0].token !== undefined")
            room = page.evaluate("({url: FakeLiveKit.rooms[0].url, token: FakeLiveKit.rooms[0].token})")
            assert room["url"] == SERVER_URL
            page.wait_for_function("FakeLiveKit.rooms[0].calls.some((c) => c[0] === 'mic')")
            assert page.evaluate("FakeLiveKit.rooms[0].calls") == [["connect"], ["startAudio"], ["mic", True]]
            bar = page.locator(W + ".vb")
            expect(bar).to_have_attribute("data-s", "connecting")

            # The agent joins the call the widget's token names and speaks through its own logic.
            claims = api.TokenVerifier(KEY, SECRET).verify(room["token"])
            assert claims.identity.startswith("visitor-") and claims.video.can_publish_sources == ["microphone"]
            metadata = json.loads(claims.room_config.agents[0].metadata)
            assert metadata["identity"]["verified"] is True and metadata["identity"]["user_id"] == "42"
            assert metadata["page_context"]["page"] == site + "/index.html"
            call = LiveKitCall.open(metadata_text=claims.room_config.agents[0].metadata, room=claims.room_config.name)
            instructions = call.session["instructions"]
            assert IDENTIFIED in instructions and f"- URL: {site}/index.html" in instructions
            deliver(page, call.ready_events())
            expect(bar).to_have_attribute("data-s", "listening")
            page.evaluate("FakeLiveKit.rooms[0].agentTrack()")
            deliver(page, call.user_state("speaking"))
            deliver(page, call.user_transcript("Do you have phones", final=False, item_id="it_1"))
            expect(page.locator(W + ".m.u.pt .b")).to_have_text("Do you have phones")
            deliver(page, call.user_state("listening"))
            deliver(page, call.turn("user", "Do you have phones under 500 dollars?", item_id="it_1"))
            expect(page.locator(W + ".m.u:not(.pt) .b")).to_have_text(["Do you have phones under 500 dollars?"])
            deliver(page, call.agent_state("listening", "thinking"))
            deliver(page, [events.tool_started(name="search_products")])
            output, evts = call.tool("search_products", {"query": "phone", "max_price": 500})
            deliver(page, evts)
            expect(page.locator(W + ".cd b")).to_have_text(["Phone X"])
            expect(page.locator(W + ".cd .pr")).to_have_text([re.compile(r"449\.00")])
            page.evaluate("FakeLiveKit.rooms[0].agentState('speaking')")
            expect(bar).to_have_attribute("data-s", "speaking")
            deliver(page, call.turn("assistant", json.loads(output)["say"], item_id="it_2"))
            page.evaluate("FakeLiveKit.rooms[0].agentState('listening')")
            deliver(page, call.agent_state("speaking", "listening"))
            expect(page.locator(W + ".m.a:not(.pt) .b")).to_have_text(
                ["Hi! How can I help you today?", "I found 1 option: Phone X (USD 449.00). They're on your screen now."]
            )
            _, evts = call.tool("start_trade_in", {"device": "Pixel 7"})
            deliver(page, evts)
            form = page.locator(W + "form.fm")
            expect(form).to_be_visible()
            expect(form.locator("input[name=device], select[name=device]")).to_have_value("Pixel 7")
            expect(bar).to_have_attribute("data-s", "listening")
            assert page.locator(W + ".pt").count() == 0
            assert page.evaluate("document.querySelectorAll('audio[data-switchboard-voice=agent]').length") == 1

            # Typed text during the call goes to the agent on lk.chat; mute turns the microphone off.
            page.locator(W + "textarea").fill("And cases?")
            page.locator(W + "textarea").press("Enter")
            page.locator(W + ".vb button:not(.hu)").click()
            page.wait_for_function("FakeLiveKit.rooms[0].calls.length >= 5")
            assert page.evaluate("FakeLiveKit.rooms[0].calls.slice(3)") == [
                ["text", "And cases?", "lk.chat"],
                ["mic", False],
            ]
            page.screenshot(path=os.path.join(artifacts_dir, "voice-livekit-widget.png"))
            page.locator(W + ".hu").click()
            expect(bar).to_have_attribute("data-s", "idle")
            assert page.evaluate("FakeLiveKit.rooms[0].calls.slice(-1)") == [["disconnect"]]
            assert page.evaluate("document.querySelectorAll('audio[data-switchboard-voice=agent]').length") == 0
            seen = page.evaluate("window.voiceBar")  # the bar sets its state again on every event: one per change
            states = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
            assert states == ["connecting", "listening", "thinking", "speaking", "listening", "idle"], states
            assert errors == []
        finally:
            browser.close()
    rows = list(Message.objects.filter(conversation_id=call.conversation_id).order_by("id").values_list("role", "text"))
    assert [r for r, _ in rows] == ["user", "tool", "assistant", "tool"]
    conversation = Conversation.objects.get(pk=call.conversation_id)
    assert conversation.identity["verified"] is True and conversation.page_url == site + "/index.html"
    assert rows[0][1] == "Do you have phones under 500 dollars?"


def test_refusal_reaches_the_voice_bar(playwright_driver, livekit_widget, asgi_live_server, customer_site):
    """The token endpoint's refusal (all the license's call slots taken) is what the visitor reads."""
    from playwright.sync_api import expect

    from realtime import services as svc

    license = livekit_widget.license
    license.limits = {**license.limits, "max_concurrent_voice_sessions": 1}
    license.save()
    assert svc.voice_slot_acquire(license=license, token="another-call") is not None
    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(
        WIDGET_PAGE.replace("__HEAD__", "")
        .replace("__BASE__", asgi_live_server)
        .replace("__KEY__", license.key)
        .replace("__STAND_IN__", STAND_IN)
    )
    with nullcontext(playwright_driver) as p:
        browser = open_browser(p)
        page = browser.new_page()
        try:
            page.goto(site + "/index.html")
            page.locator(W + ".lau").click()
            page.locator(W + ".mc").click()
            bar = page.locator(W + ".vb")
            expect(bar).to_have_attribute("data-s", "error")
            expect(page.locator(W + ".vb")).to_contain_text(
                "Too many voice calls are running on this site right now. Please try again shortly."
            )
            assert page.evaluate("FakeLiveKit.rooms.length") == 0
        finally:
            browser.close()


def test_vendored_sdk_loads_without_touching_the_pages_own(playwright_driver, asgi_live_server, customer_site):
    root, site = customer_site.dir, customer_site.origin
    (root / "sdk.html").write_text(
        f"""<!doctype html><html><body><script>window.LivekitClient = {{mine: true}};</script>
<script src="{asgi_live_server}/static/widget/voice-livekit.js"></script></body></html>"""
    )
    with nullcontext(playwright_driver) as p:
        browser = open_browser(p)
        page = browser.new_page()
        errors = watch_errors(page)
        try:
            page.goto(site + "/sdk.html")
            loaded = page.evaluate(
                """(base) => SwitchboardVoiceLiveKit.load({baseUrl: base}).then((sdk) => ({
                    version: sdk.version, room: typeof sdk.Room, events: sdk.RoomEvent.TrackSubscribed,
                    audio: sdk.Track.Kind.Audio, pages: window.LivekitClient}))""",
                asgi_live_server,
            )
            assert loaded == {
                "version": "2.23.0",
                "room": "function",
                "events": "trackSubscribed",
                "audio": "audio",
                "pages": {"mine": True},
            }
            assert errors == []
        finally:
            browser.close()
