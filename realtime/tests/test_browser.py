"""Chromium talks to voice.js with a fake microphone (espeak-ng speech): through the relay to the fake
upstream and back — transcript bubbles, a product card, audio playback states.

The first tests drive voice.js through a minimal host page implementing the widget<->voice api contract
(BRIEF.md); `test_visitor_talks_to_the_real_widget_through_the_relay` does it end to end in the real widget,
embedded on another origin by the one-line loader.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import nullcontext

import pytest

from realtime.tests.voice_browser import (
    WATCH_VOICE_BAR,
    host_page,
    launch_with_mic,
    mic_samples,
    speech_wav,
    wait_for_mic_audio,
    widget_page,
)
from widgets.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_visitor_talks_through_the_relay(
    playwright_driver, voice_widget, fake_realtime_thread, asgi_live_server, customer_site, tmp_path, artifacts_dir
):
    wav = speech_wav(tmp_path)
    from playwright.sync_api import expect

    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(host_page(asgi_live_server, voice_widget))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        browser = launch_with_mic(p, wav)
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
            wait_for_mic_audio(page, fake_realtime_thread)  # ~2 s of the spoken question
            page.click("#hangup")
            expect(page.locator("#state")).to_have_text("idle")
        except Exception:
            page.screenshot(path=os.path.join(artifacts_dir, "voice-relay-browser-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert not errors
    # The fake microphone's speech reached the upstream as PCM16: not silence.
    samples = mic_samples(fake_realtime_thread)  # every append one widget frame
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
    from playwright.sync_api import expect

    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(host_page(asgi_live_server, voice_widget))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        # No --use-fake-ui-for-media-stream and no permission granted: getUserMedia is refused.
        browser = launch_with_mic(p, grant=False)
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
    from playwright.sync_api import expect

    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(host_page(asgi_live_server, voice_widget, consent_required=True, consent=False))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        browser = launch_with_mic(p)
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

    wav = speech_wav(tmp_path)
    voice_widget.config["voice"].update(consent_required=True, consent_text="Calls are answered by an AI.")
    voice_widget.save()
    voice_widget = publish(voice_widget, owner)
    root, site = customer_site.dir, customer_site.origin
    (root / "index.html").write_text(widget_page(asgi_live_server, voice_widget.license.key))
    with nullcontext(playwright_driver) as p:  # the session's one Playwright driver (root conftest)
        browser = launch_with_mic(p, wav, "--autoplay-policy=no-user-gesture-required")
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
            wait_for_mic_audio(page, fake_realtime_thread)  # ~2 s of the spoken question
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
    samples = mic_samples(fake_realtime_thread)  # every append one widget frame
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
