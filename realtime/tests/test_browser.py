"""Chromium talks to voice.js with a fake microphone (espeak-ng speech): through the relay to the fake
upstream and back — transcript bubbles, a product card, audio playback states.

The first tests drive voice.js through a minimal host page implementing the widget<->voice api contract
(BRIEF.md); `test_visitor_talks_to_the_real_widget_through_the_relay` does it end to end in the real widget,
embedded on another origin by the one-line loader.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
from contextlib import nullcontext

import pytest

from conftest import CHROMIUM_ARGS as BASE_ARGS
from conftest import chromium_path
from widgets.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOST_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Customer shop</title>
<style>body{font:15px system-ui;margin:24px;max-width:520px} .msg{padding:8px 12px;border-radius:12px;margin:6px 0}
.user{background:#4f46e5;color:#fff;margin-left:80px}.assistant{background:#f3f4f6;margin-right:80px}
.card{border:1px solid #ddd;border-radius:10px;padding:10px;margin:6px 0}#state{font-weight:600}
#partial{color:#6b7280;font-style:italic;min-height:1.2em}</style></head>
<body><h1>Phone Shop</h1>
<p>Voice: <span id="state">idle</span> <span id="detail"></span></p>
<button id="talk">Talk</button> <button id="mute">Mute</button> <button id="hangup">Hang up</button>
<div id="log"></div><div id="partial"></div><div id="cards"></div>
<script>
window.states = [];
var api = {
  baseUrl: "__BASE__", licenseKey: "__KEY__", widgetId: "__WIDGET__", visitorId: "visitor-browser",
  config: {voice: __VOICE__},
  confirm: function (text) { window.confirmText = text; return Promise.resolve(__CONSENT__); },
  addMessage: function (m) {
    var d = document.createElement("div"); d.className = "msg " + m.role; d.textContent = m.text;
    document.getElementById("log").appendChild(d);
  },
  setPartial: function (role, text) { document.getElementById("partial").textContent = text ? role + ": " + text : ""; },
  renderEvent: function (e) {
    if (e.type !== "ui.product_cards") return;
    e.products.forEach(function (p) {
      var c = document.createElement("div"); c.className = "card";
      c.textContent = p.title + " — " + p.currency + " " + p.price;
      document.getElementById("cards").appendChild(c);
    });
  },
  setVoiceState: function (s, detail) {
    window.states.push(s);
    document.getElementById("state").textContent = s;
    document.getElementById("detail").textContent = detail || "";
  },
  root: document,
};
var script = document.createElement("script");
script.src = api.baseUrl + "/static/widget/voice.js";
script.onload = function () { window.voice = window.SwitchboardVoice.create(api); };
document.head.appendChild(script);
document.getElementById("talk").onclick = function () { window.voice.start().catch(function () {}); };
document.getElementById("hangup").onclick = function () { window.voice.stop(); };
</script></body></html>
"""


def host_page(base: str, widget, *, consent_required: bool = False, consent: bool = True) -> str:
    voice = {
        "enabled": True,
        "transport": "relay",
        "consent_required": consent_required,
        "consent_text": "This call is processed by an AI assistant.",
    }
    return (
        HOST_PAGE.replace("__BASE__", base)
        .replace("__KEY__", widget.license.key)
        .replace("__WIDGET__", widget.public_id)
        .replace("__VOICE__", json.dumps(voice))
        .replace("__CONSENT__", "true" if consent else "false")
    )


def speech_wav(tmp_path) -> str:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        if os.environ.get("SWITCHBOARD_REQUIRE_BROWSER") == "1":
            pytest.fail("espeak-ng and sox are required for the voice browser test.")
        pytest.skip("espeak-ng/sox not installed")
    raw, wav = tmp_path / "q.wav", tmp_path / "q48.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "Do you have phones under five hundred dollars?"], check=True)
    subprocess.run(["sox", str(raw), "-r", "48000", "-c", "1", str(wav)], check=True)
    return str(wav)


def test_visitor_talks_through_the_relay(
    playwright_driver, voice_widget, fake_realtime_thread, asgi_live_server, customer_site, tmp_path, artifacts_dir
):
    chromium = chromium_path()
    wav = speech_wav(tmp_path)
    from playwright.sync_api import expect

    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(host_page(asgi_live_server, voice_widget))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        browser = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=[
                *BASE_ARGS,
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
            ],
        )
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(site + "/index.html")
            page.wait_for_function("window.voice !== undefined")
            page.click("#talk")
            expect(page.locator(".msg.user")).to_have_text("Do you have phones under 500 dollars?", timeout=15000)
            expect(page.locator(".card")).to_have_text(["Phone X — USD 449.00"], timeout=10000)
            expect(page.locator(".msg.assistant")).to_have_text("We have two phones.", timeout=10000)
            states = page.evaluate("window.states")
            assert states[:2] == ["connecting", "listening"] and "speaking" in states
            page.screenshot(path=os.path.join(artifacts_dir, "voice-relay-browser.png"), full_page=True)
            for _ in range(100):  # let ~2 s of the spoken question stream up (40 ms chunks)
                if len(fake_realtime_thread.of_type("input_audio_buffer.append")) >= 50:
                    break
                page.wait_for_timeout(100)
            page.click("#hangup")
            expect(page.locator("#state")).to_have_text("idle")
        except Exception:
            page.screenshot(path=os.path.join(artifacts_dir, "voice-relay-browser-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert not errors
    # The fake microphone's speech reached the upstream as PCM16: not silence.
    pcm = b"".join(base64.b64decode(e["audio"]) for e in fake_realtime_thread.of_type("input_audio_buffer.append"))
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    assert len(samples) >= 24000 * 1.9 and max(abs(s) for s in samples) > 1000
    session = fake_realtime_thread.of_type("session.update")[0]["session"]
    assert "sk-" not in json.dumps(session)
    conversation = Conversation.objects.get(widget=voice_widget)
    assert list(Message.objects.filter(conversation=conversation).exclude(role="tool").values_list("role", "text")) == [
        ("user", "Do you have phones under 500 dollars?"),
        ("assistant", "We have two phones."),
    ]


def test_denied_microphone_says_so(
    playwright_driver, voice_widget, fake_realtime_thread, asgi_live_server, customer_site, artifacts_dir
):
    chromium = chromium_path()
    from playwright.sync_api import expect

    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(host_page(asgi_live_server, voice_widget))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        # No --use-fake-ui-for-media-stream and no permission granted: getUserMedia is refused.
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=[*BASE_ARGS, "--use-fake-device-for-media-stream"]
        )
        page = browser.new_context(permissions=[]).new_page()
        try:
            page.goto(site + "/index.html")
            page.wait_for_function("window.voice !== undefined")
            page.click("#talk")
            expect(page.locator("#state")).to_have_text("error", timeout=10000)
            expect(page.locator("#detail")).to_contain_text("Microphone access was blocked")
            page.screenshot(path=os.path.join(artifacts_dir, "voice-mic-denied.png"))
        finally:
            browser.close()
    assert not fake_realtime_thread.paths  # no call was opened


def test_consent_is_asked_before_the_first_call(
    playwright_driver, voice_widget, fake_realtime_thread, asgi_live_server, customer_site
):
    chromium = chromium_path()
    from playwright.sync_api import expect

    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(host_page(asgi_live_server, voice_widget, consent_required=True, consent=False))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        browser = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=[*BASE_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"],
        )
        page = browser.new_page()
        try:
            page.goto(site + "/index.html")
            page.wait_for_function("window.voice !== undefined")
            page.click("#talk")
            page.wait_for_function("window.confirmText !== undefined")
            assert page.evaluate("window.confirmText") == "This call is processed by an AI assistant."
            expect(page.locator("#state")).to_have_text("idle")
            page.wait_for_timeout(300)
        finally:
            browser.close()
    assert not fake_realtime_thread.paths  # declined: no call


WIDGET_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Phone Shop</title>
<link rel="icon" href="data:,"><style>body{font:16px system-ui;margin:40px;color:#1f2937}</style></head>
<body><h1>Phone Shop</h1><p>Great phones, fair prices.</p>
<script src="__BASE__/api/widget/__KEY__/chat-widget.js" async></script>
</body></html>
"""

# Records every visible state of the widget's voice bar (data-s on .vb inside its Shadow DOM), in order.
WATCH_VOICE_BAR = """() => {
  const vb = document.querySelector('switchboard-widget').shadowRoot.querySelector('.vb');
  window.voiceBar = [];
  new MutationObserver((records) => records.forEach((r, i) => window.voiceBar.push(
    i + 1 < records.length ? records[i + 1].oldValue : vb.getAttribute('data-s')))
  ).observe(vb, {attributes: true, attributeFilter: ['data-s'], attributeOldValue: true});
}"""


def test_visitor_talks_to_the_real_widget_through_the_relay(
    playwright_driver,
    voice_widget,
    owner,
    fake_realtime_thread,
    asgi_live_server,
    customer_site,
    tmp_path,
    artifacts_dir,
):
    """The customer page holds only the one-line loader; the visitor opens the popup, consents, and talks."""
    from playwright.sync_api import expect

    from realtime.tests.conftest import publish

    chromium = chromium_path()
    wav = speech_wav(tmp_path)
    voice_widget.config["voice"].update(consent_required=True, consent_text="Calls are answered by an AI.")
    voice_widget.save()
    voice_widget = publish(voice_widget, owner)
    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(
        WIDGET_PAGE.replace("__BASE__", asgi_live_server).replace("__KEY__", voice_widget.license.key)
    )
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        browser = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=[
                *BASE_ARGS,
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # Console errors (the widget's "Switchboard: ..."), failed responses; resource errors are logged twice,
        # so the console's copy is skipped. The product image's host cannot resolve here (no internet).
        page.on(
            "console",
            lambda msg: (
                errors.append(msg.text)
                if msg.type == "error" and not msg.text.startswith("Failed to load resource")
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
            page.locator(w + ".lau").click()
            page.locator(w + ".vb").wait_for(state="attached")
            page.evaluate(WATCH_VOICE_BAR)
            expect(page.locator(w + ".m.a:not(.pt) .b")).to_have_text(["Hi! How can I help you today?"])
            page.locator(w + ".mc").click()
            consent = page.locator(w + "[aria-label='Voice call consent']")
            expect(consent).to_contain_text("Calls are answered by an AI.")
            consent.locator("text=Start the call").click()
            bar = page.locator(w + ".vb")
            expect(page.locator(w + ".m.u:not(.pt) .b")).to_have_text(
                ["Do you have phones under 500 dollars?"], timeout=15000
            )
            expect(page.locator(w + ".cd b")).to_have_text(["Phone X"], timeout=10000)
            expect(page.locator(w + ".cd .pr")).to_have_text([re.compile(r"449\.00")])
            expect(page.locator(w + ".cd .ph")).to_have_text("P")  # the unreachable image gave way to a placeholder
            expect(page.locator(w + ".m.a:not(.pt) .b")).to_have_text(
                ["Hi! How can I help you today?", "We have two phones."], timeout=10000
            )
            expect(bar).to_have_attribute("data-s", "listening", timeout=10000)
            expect(page.locator(w + ".vl")).to_have_text("Listening…")
            expect(page.locator(w + ".vb button:not(.hu)")).to_have_text("Mute")
            expect(page.locator(w + ".hu")).to_have_text("End call")
            expect(page.locator(w + ".mc")).to_have_attribute("aria-label", "End voice call")
            assert page.locator(w + ".pt").count() == 0  # the live partial line is gone once the turn is final
            for _ in range(100):  # let ~2 s of the spoken question stream up (40 ms chunks)
                if len(fake_realtime_thread.of_type("input_audio_buffer.append")) >= 50:
                    break
                page.wait_for_timeout(100)
            page.wait_for_timeout(300)  # animations settle
            page.screenshot(path=os.path.join(artifacts_dir, "voice-widget-call.png"))
            page.locator(w + ".hu").click()
            expect(bar).to_be_hidden()
            expect(page.locator(w + ".mc")).to_have_attribute("aria-label", "Start voice call")
            states = page.evaluate("window.voiceBar")
        except Exception:
            page.screenshot(path=os.path.join(artifacts_dir, "voice-widget-call-failure.png"))
            raise
        finally:
            browser.close()
    assert not errors
    seen = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert seen[:2] == ["connecting", "listening"] and "speaking" in seen and seen[-1] == "idle", seen
    assert "error" not in seen
    # The fake microphone's speech reached the upstream as PCM16: not silence.
    pcm = b"".join(base64.b64decode(e["audio"]) for e in fake_realtime_thread.of_type("input_audio_buffer.append"))
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    assert len(samples) >= 24000 * 1.9 and max(abs(s) for s in samples) > 1000
    conversation = Conversation.objects.get(widget=voice_widget, channel="voice")
    assert conversation.ended_at is not None and conversation.end_reason == "hangup"
    turns = list(conversation.messages.order_by("created_at", "id").values_list("role", flat=True))
    assert turns == ["user", "tool", "assistant"]  # one Message per turn, plus the tool call's UI events
    assert list(conversation.messages.exclude(role="tool").values_list("role", "text")) == [
        ("user", "Do you have phones under 500 dollars?"),
        ("assistant", "We have two phones."),
    ]
    assert conversation.messages.get(role="tool").payload
