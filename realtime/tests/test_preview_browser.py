"""Voice in the configurator preview, in Chromium with the fake microphone (issue 14.3): a member edits the
Voice tab without saving, clicks the preview's mic, and talks through the relay to the fake Realtime server —
which gets the DRAFT's instructions, not the published ones. The call is marked "Test call" (over the relay,
for a WebRTC draft) and nothing is counted against the client's license."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext

import pytest
from django.test import Client

from conftest import CHROMIUM_ARGS as BASE_ARGS
from conftest import chromium_path
from licenses.models import LicenseUsage
from realtime.tests.voice_browser import mic_samples, speech_wav, wait_for_mic_audio
from widgets.models import Conversation, Lead

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DRAFT_TEXT = "DRAFT ONLY: you are Zed, the voice of the unsaved draft."


def test_member_talks_to_the_unsaved_draft_in_the_preview(
    playwright_driver, voice_widget, member, fake_realtime_thread, asgi_live_server, tmp_path, artifacts_dir
):
    from playwright.sync_api import expect

    chromium = chromium_path()
    wav = speech_wav(tmp_path)
    published = voice_widget.published_version.config["voice"]["instructions"]
    saved_draft = json.dumps(voice_widget.config, sort_keys=True)
    client = Client()
    client.force_login(member)
    tickets: list[str] = []  # the bodies the preview posted for its tickets
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
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.add_cookies(
            [{"name": "sessionid", "value": client.cookies["sessionid"].value, "domain": "localhost", "path": "/"}]
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("request", lambda r: tickets.append(r.post_data or "") if r.url.endswith("/voice-preview/") else None)
        frame = page.frame_locator("#preview-frame")
        w = "switchboard-widget >> "  # Playwright CSS pierces the widget's open shadow root
        try:
            page.goto(f"{asgi_live_server}/app/widgets/{voice_widget.public_id}/")
            page.wait_for_function("window.switchboardConfigurator !== undefined")
            frame.locator(w + ".mc").wait_for()
            # Edit the draft without saving: new instructions, and the WebRTC transport.
            page.get_by_role("tab", name="Voice").click()
            voice_tab = page.get_by_role("tabpanel", name="Voice")
            voice_tab.get_by_label("Instructions", exact=True).fill(DRAFT_TEXT)
            voice_tab.get_by_label("Transport", exact=True).select_option("webrtc")
            # The preview re-mounts the real widget with the draft: its calls are marked, and say they are relayed.
            mark = frame.locator(w + ".vb .tc")
            expect(mark).to_have_text("Test call · relay")
            frame.locator(w + ".mc").click()
            expect(mark).to_be_visible()
            expect(mark).to_have_attribute(
                "title",
                "The preview tries WebRTC drafts over the relay, with the same "
                "session and tools. A test call on this draft: not counted against "
                "the client's minutes.",
            )
            expect(frame.locator(w + ".m.u:not(.pt) .b")).to_have_text(
                ["Do you have phones under 500 dollars?"], timeout=20_000
            )
            expect(frame.locator(w + ".cd b")).to_have_text(["Phone X"])
            expect(frame.locator(w + ".m.a:not(.pt) .b").last).to_have_text("We have two phones.")
            expect(frame.locator(w + ".vb")).to_have_attribute("data-s", "listening")
            wait_for_mic_audio(page, fake_realtime_thread)  # ~2 s of the spoken question
            page.screenshot(path=os.path.join(artifacts_dir, "voice-preview-test-call.png"))
            frame.locator(w + ".hu").click()
            expect(frame.locator(w + ".vb")).to_be_hidden()
            expect(page.locator("#save-state")).to_have_text("Unsaved changes")
        except Exception:
            page.screenshot(path=os.path.join(artifacts_dir, "voice-preview-test-call-failure.png"))
            raise
        finally:
            browser.close()
    assert not errors
    # The ticket carried the editor's draft; the upstream got the draft's session through the relay.
    assert len(tickets) == 1 and DRAFT_TEXT in tickets[0] and '"webrtc"' in tickets[0]
    session = fake_realtime_thread.of_type("session.update")[0]["session"]
    assert session["instructions"].startswith(DRAFT_TEXT)
    assert published not in session["instructions"] and "sk-" not in json.dumps(session)
    samples = mic_samples(fake_realtime_thread)  # every append one widget frame
    assert len(samples) >= 24000 * 1.9 and max(abs(s) for s in samples) > 1000  # the fake mic's speech
    # A test call: recorded as a preview, billed to nobody, and the draft still unsaved.
    conversation = Conversation.objects.get(widget=voice_widget)
    assert conversation.is_preview and conversation.end_reason == "hangup"
    assert list(conversation.messages.order_by("created_at", "id").values_list("role", flat=True)) == [
        "user",
        "tool",
        "assistant",
    ]
    assert not LicenseUsage.objects.filter(license=voice_widget.license).exists()
    assert not Lead.objects.exists()
    voice_widget.refresh_from_db()
    assert json.dumps(voice_widget.config, sort_keys=True) == saved_draft
