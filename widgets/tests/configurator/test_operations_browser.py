"""The operations pages in Chromium (issue 13): open the inbox, filter, open a voice conversation with a
product card, export the CSV, and view the analytics charts — screenshots at 1440 and 1024."""

from __future__ import annotations

import csv
import io
import os

import pytest

from widgets.analytics import rollup_day
from widgets.models import Channel, Conversation, Lead, Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CARD = {
    "ui": [
        {
            "type": "ui.product_cards",
            "products": [
                {
                    "id": "1",
                    "title": "Pixel 7",
                    "description": "",
                    "price": "449.00",
                    "currency": "USD",
                    "image_url": "",
                    "url": "https://shop.example.com/p7",
                    "in_stock": True,
                }
            ],
        }
    ]
}


@pytest.fixture
def agency_data(widget_a, widget_b):
    voice = Conversation.objects.create(
        widget=widget_a,
        channel=Channel.VOICE,
        session_id="call-1",
        visitor_id="v_call",
        audio_in_seconds=95,
        cost_usd="0.0750",
        usage={"total_tokens": 1800},
    )
    Message.objects.create(conversation=voice, role="user", text="Which phones are under 500 dollars?")
    Message.objects.create(conversation=voice, role="assistant", text="The Pixel 7 fits.", payload=CARD)
    Lead.objects.create(widget=widget_a, conversation=voice, name="Ada", email="ada@example.com", source="voice")
    chat = Conversation.objects.create(widget=widget_a, channel=Channel.CHAT, session_id="chat-1", visitor_id="v_chat")
    Message.objects.create(conversation=chat, role="user", text="Opening hours?")
    Message.objects.create(conversation=chat, role="user", text="hello?", failure_kind="upstream_timeout")
    other = Conversation.objects.create(widget=widget_b, channel=Channel.VOICE, session_id="b-1")
    Message.objects.create(conversation=other, role="user", text="Agency B's secret question")
    rollup_day(voice.started_at.date())
    return {"voice": voice, "chat": chat}


@pytest.mark.parametrize("width", [1440, 1024])
def test_inbox_conversation_csv_and_analytics(signed_in, live_server, viewer, agency_data, artifacts_dir, width):
    page = signed_in(viewer, width=width)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server.url}/app/conversations/")
    rows = page.locator("#conversation-table tbody tr")
    rows.first.wait_for()
    assert rows.count() == 2 and "Agency B" not in page.content()

    page.select_option("#f-channel", "voice")
    page.click("button:has-text('Filter')")
    page.wait_for_url("**channel=voice**")
    assert rows.count() == 1 and rows.first.get_attribute("data-channel") == "voice"
    page.screenshot(path=os.path.join(artifacts_dir, f"inbox-list-{width}.png"), full_page=True)

    with page.expect_download() as download:
        page.click("#export-csv")
    text = open(download.value.path(), encoding="utf-8").read()  # noqa: SIM115 - read once
    exported = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["id"]) for r in exported] == [agency_data["voice"].pk] and exported[0]["lead"] == "yes"

    rows.first.locator("a:has-text('Open')").click()
    page.wait_for_selector("[data-ui=product_cards]")
    assert page.locator(".ui-card").first.inner_text().startswith("Pixel 7")
    assert "95.0 s in" in page.content() and "ada@example.com" in page.content()
    page.screenshot(path=os.path.join(artifacts_dir, f"inbox-conversation-{width}.png"), full_page=True)

    page.click("nav.mainnav >> text=Analytics")
    page.wait_for_selector("#totals")
    assert page.locator(".chart svg").count() == 4
    assert page.locator(".chart svg rect").count() >= 3  # the day's bars: chat, voice, cost, failures
    assert page.locator("#totals .stat-n").first.inner_text() == "2"
    page.screenshot(path=os.path.join(artifacts_dir, f"analytics-{width}.png"), full_page=True)
    assert errors == []
