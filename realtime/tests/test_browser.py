"""Chromium talks to voice.js with a fake microphone (espeak-ng speech): through the relay to the fake
upstream and back — transcript bubbles, a product card, audio playback states.

The widget bundle (static/widget/widget.js) is built on another branch; this test drives voice.js
through a minimal host page that implements the widget<->voice api contract (BRIEF.md).
"""

from __future__ import annotations

import base64
import json
import os
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
    voice = {"enabled": True, "transport": "relay", "consent_required": consent_required,
             "consent_text": "This call is processed by an AI assistant."}
    return (HOST_PAGE.replace("__BASE__", base).replace("__KEY__", widget.license.key)
            .replace("__WIDGET__", widget.public_id).replace("__VOICE__", json.dumps(voice))
            .replace("__CONSENT__", "true" if consent else "false"))


def speech_wav(tmp_path) -> str:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        if os.environ.get("SWITCHBOARD_REQUIRE_BROWSER") == "1":
            pytest.fail("espeak-ng and sox are required for the voice browser test.")
        pytest.skip("espeak-ng/sox not installed")
    raw, wav = tmp_path / "q.wav", tmp_path / "q48.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "Do you have phones under five hundred dollars?"], check=True)
    subprocess.run(["sox", str(raw), "-r", "48000", "-c", "1", str(wav)], check=True)
    return str(wav)


def test_visitor_talks_through_the_relay(playwright_driver, voice_widget, fake_realtime_thread, asgi_live_server, static_site,
                                         tmp_path, artifacts_dir):
    chromium = chromium_path()
    wav = speech_wav(tmp_path)
    from playwright.sync_api import expect

    root, site = static_site
    (root / "index.html").write_text(host_page(asgi_live_server, voice_widget))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=[
            *BASE_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}"])
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
        ("user", "Do you have phones under 500 dollars?"), ("assistant", "We have two phones.")]


def test_denied_microphone_says_so(playwright_driver, voice_widget, fake_realtime_thread, asgi_live_server, static_site, artifacts_dir):
    chromium = chromium_path()
    from playwright.sync_api import expect

    root, site = static_site
    (root / "index.html").write_text(host_page(asgi_live_server, voice_widget))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        # No --use-fake-ui-for-media-stream and no permission granted: getUserMedia is refused.
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=[*BASE_ARGS, "--use-fake-device-for-media-stream"])
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


def test_consent_is_asked_before_the_first_call(playwright_driver, voice_widget, fake_realtime_thread, asgi_live_server, static_site):
    chromium = chromium_path()
    from playwright.sync_api import expect

    root, site = static_site
    (root / "index.html").write_text(host_page(asgi_live_server, voice_widget, consent_required=True, consent=False))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=[
            *BASE_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
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
