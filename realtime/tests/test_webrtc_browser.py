"""The WebRTC transport end to end, offline: Chromium with a fake microphone runs the real widget (embedded by
the one-line loader on another origin) against a fake OpenAI Realtime WebRTC peer built with aiortc on
127.0.0.1 (realtime/tests/fake_webrtc.py).

The browser gets the ephemeral key from our server, posts its SDP offer to the calls URL our server names
({OPENAI_BASE_URL}/realtime/calls), sends the speech on its mic track, hears the peer's audio track, runs the
scripted `search_products` call through our tool endpoint and answers on `oai-events`; the widget shows one
bubble per turn and the product card, and our database gets the turns, the tool turn and the usage.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import nullcontext

import pytest
from django.conf import settings

from licenses.models import LicenseUsage
from realtime import services as svc
from realtime.session_config import session_config
from realtime.tests.conftest import LoopThread, publish
from realtime.tests.fake_webrtc import USAGE
from realtime.tests.voice_browser import (
    IDENTIFIED,
    WATCH_VOICE_BAR,
    identify_head,
    launch_with_mic,
    speech_wav,
    widget_page,
)
from widgets.config_schema import config_normalize
from widgets.models import Conversation

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every RTCPeerConnection the page makes, so the test can read the remote audio's statistics.
RECORD_PEERS = """(() => {
  const Native = window.RTCPeerConnection;
  window.peers = [];
  window.RTCPeerConnection = function (...args) { const pc = new Native(...args); window.peers.push(pc); return pc; };
  window.RTCPeerConnection.prototype = Native.prototype;
})();"""

REMOTE_AUDIO = """async () => {
  const stats = await window.peers[0].getStats();
  let inbound = null;
  stats.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') inbound = r; });
  return inbound && {bytes: inbound.bytesReceived, energy: inbound.totalAudioEnergy};
}"""


@pytest.fixture
def fake_webrtc(settings):
    from realtime.tests.fake_webrtc import FakeRealtimeWebRTC  # aiortc: requirements-dev.txt

    runner = LoopThread()
    fake = runner.run(FakeRealtimeWebRTC().start())
    settings.OPENAI_BASE_URL = fake.base_url
    settings.OPENAI_API_KEY = "sk-platform-test"
    yield fake
    runner.run(fake.stop(), timeout=20)
    runner.stop()


def test_visitor_talks_to_the_real_widget_over_webrtc(
    playwright_driver, voice_widget, owner, fake_webrtc, asgi_live_server, customer_site, tmp_path, artifacts_dir
):
    from playwright.sync_api import expect

    wav = speech_wav(tmp_path)
    voice_widget.config = config_normalize(
        {"voice": {"transport": "webrtc"}, "behaviour": {"page_context": True}}, base=voice_widget.config
    )
    voice_widget.save()
    voice_widget = publish(voice_widget, owner)
    root, site = customer_site.dir, customer_site.origin
    # The customer's page identifies its signed-in user and sets a context: both reach the session over WebRTC.
    head = identify_head(voice_widget, owner)
    (root / "index.html").write_text(widget_page(asgi_live_server, voice_widget.license.key, head=head))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        browser = launch_with_mic(
            p,
            wav,
            "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection",  # the fake peer's ICE candidates are 127.0.0.1
        )
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        page.add_init_script(RECORD_PEERS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: (
                errors.append(msg.text)
                if msg.type in ("error", "warning") and not msg.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on(
            "requestfailed",
            lambda r: None if r.url == "https://shop.example.com/p.png" else errors.append(f"failed {r.url}"),
        )
        w = "switchboard-widget >> "  # Playwright CSS pierces the widget's open shadow root
        try:
            page.goto(site + "/index.html")
            page.wait_for_function("() => window.SwitchboardWidgets && window.SwitchboardWidgets[0].identityToken")
            page.locator(w + ".lau").click()
            page.locator(w + ".vb").wait_for(state="attached")
            page.evaluate(WATCH_VOICE_BAR)
            page.locator(w + ".mc").click()
            bar = page.locator(w + ".vb")
            expect(page.locator(w + ".m.u:not(.pt) .b")).to_have_text(
                ["Do you have phones under 500 dollars?"], timeout=20000
            )
            expect(page.locator(w + ".cd b")).to_have_text(["Phone X"], timeout=10000)
            expect(page.locator(w + ".cd .pr")).to_have_text([re.compile(r"449\.00")])
            expect(page.locator(w + ".m.a:not(.pt) .b")).to_have_text(
                ["Hi! How can I help you today?", "We have two phones."], timeout=10000
            )
            expect(bar).to_have_attribute("data-s", "listening", timeout=10000)  # after the tone played out
            expect(page.locator(w + ".vl")).to_have_text("Listening…")
            assert page.locator(w + ".pt").count() == 0  # the live partial line is gone once the turn is final
            remote = page.evaluate(REMOTE_AUDIO)
            assert remote["bytes"] > 1000 and remote["energy"] > 0.001, remote  # the peer's tone was heard
            page.screenshot(path=os.path.join(artifacts_dir, "voice-webrtc-call.png"))
            # Hang up; the database is read once the widget's last record (end: hangup) has been answered.
            with page.expect_response(
                lambda r: r.url.endswith("/voice/record") and '"end":"hangup"' in (r.request.post_data or "")
            ) as last:
                page.locator(w + ".hu").click()
            assert last.value.status == 200 and last.value.json()["end"]["reason"] == "hangup"
            expect(bar).to_be_hidden()
            expect(page.locator(w + ".mc")).to_have_attribute("aria-label", "Start voice call")
            states = page.evaluate("window.voiceBar")
            assert page.evaluate("window.peers[0].connectionState") == "closed"
        except Exception:
            page.screenshot(path=os.path.join(artifacts_dir, "voice-webrtc-call-failure.png"))
            raise
        finally:
            browser.close()
    assert not errors, errors
    seen = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert seen[:2] == ["connecting", "listening"] and "speaking" in seen and seen[-1] == "idle", seen
    assert "error" not in seen

    # The browser posted its SDP offer (audio + the data channel) to the calls URL with the ephemeral key.
    (offer,) = fake_webrtc.call_requests
    assert offer["headers"]["authorization"] == "Bearer " + fake_webrtc.ephemeral_key
    assert offer["headers"]["content-type"] == "application/sdp"
    assert offer["body"].startswith("v=0") and "m=audio" in offer["body"] and "webrtc-datachannel" in offer["body"]
    assert "sk-" not in json.dumps(offer)
    # The key was minted by our server with the platform key and the ONE session config, whose instructions
    # carry the verified identity and the page the browser sent with the client-secret request.
    (secret,) = fake_webrtc.secret_requests
    assert secret["headers"]["authorization"] == "Bearer sk-platform-test"
    published = voice_widget.published_version.config
    session = dict(secret["body"]["session"])
    instructions = session.pop("instructions")
    assert IDENTIFIED in instructions and f"- URL: {site}/index.html" in instructions
    assert '- Site context (JSON): {"cart_total": 899.5}' in instructions
    expected = session_config(config=published, widget=voice_widget)
    assert instructions.startswith(expected.pop("instructions")) and session == expected
    # The fake microphone's speech reached the peer on the mic track: loud, not silence.
    assert fake_webrtc.mic_loud_seconds >= 0.8 and fake_webrtc.mic_peak > 1000
    # The tool ran on our server and its output went back on `oai-events`, then one response.create.
    kinds = [e["type"] for e in fake_webrtc.received]
    assert kinds == ["conversation.item.create", "response.create"], kinds
    output = fake_webrtc.received[0]["item"]
    assert output["type"] == "function_call_output" and output["call_id"] == "call_1"
    assert json.loads(output["output"])["ok"] is True and "Phone X" in output["output"]

    conversation = Conversation.objects.get(widget=voice_widget, channel="voice")
    assert conversation.session_id.startswith("webrtc-") and conversation.ended_at is not None
    assert conversation.identity["verified"] is True and conversation.identity["user_id"] == "42"
    assert conversation.page_url == f"{site}/index.html"
    turns = list(conversation.messages.order_by("created_at", "id").values_list("role", "text", "item_id"))
    assert turns == [  # one Message per turn, in the order they happened
        ("user", "Do you have phones under 500 dollars?", "item_u1"),
        ("tool", "I found 1 option: Phone X (USD 449.00). They're on your screen now.", ""),
        ("assistant", "We have two phones.", "item_a1"),
    ], turns
    tool = conversation.messages.get(role="tool")
    assert tool.payload["tool"] == "search_products"
    assert [p["title"] for p in tool.payload["ui_events"][0]["products"]] == ["Phone X"]
    # Usage: both responses' token counts, the cost computed on our side, billed to the license.
    expected = svc.usage_add(svc.usage_add({}, USAGE), USAGE)
    assert conversation.usage == expected
    assert conversation.cost_usd == svc.usage_cost(model=settings.REALTIME_DEFAULT_MODEL, usage=expected) > 0
    assert conversation.audio_in_seconds > 0
    license_usage = LicenseUsage.objects.get(license=voice_widget.license)
    assert license_usage.cost_usd == conversation.cost_usd
    assert license_usage.voice_seconds == pytest.approx(conversation.audio_in_seconds)
