"""The operations pages in Chromium (issue 13): open the inbox, filter, open a voice conversation with a
product card, export the CSV, and view the analytics charts — screenshots at 1440 and 1024."""

from __future__ import annotations

import csv
import io
import os

import pytest

from widgets.analytics import rollup_day
from widgets.models import Channel, Conversation, Lead, Message
from widgets.tests.conftest import product_cards_payload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CARD = product_cards_payload()


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


LAYOUT_PROBE = """() => {
  const nav = document.querySelector('nav.mainnav'), doc = document.documentElement;
  const box = (el) => el && el.getBoundingClientRect();
  return {
    navHidden: nav.scrollWidth - nav.clientWidth,
    pageOverflow: doc.scrollWidth - doc.clientWidth,
    meters: [...document.querySelectorAll('.meter')].map((m) => ({
      label: box(m.querySelector('.meter-head')).height,
      labelBackground: getComputedStyle(m.querySelector('.meter-head span')).backgroundColor,
      track: box(m.querySelector('.meter-track')).height,
    })),
    cards: [...document.querySelectorAll('.conv-grid > .card')].map((c) => box(c).top),
  };
}"""


def test_app_pages_keep_every_link_label_and_id_on_screen_at_desktop_widths(signed_in, live_server, owner, widget_a):
    """At 1024–1440 px every main link is visible (none clipped off the bar's end), the license usage meters
    show their labels above the bars (an analytics rule once squashed them to 6 px), and a long visitor id
    wraps inside the conversation's Details card beside the transcript instead of running off the page."""
    conversation = Conversation.objects.create(
        widget=widget_a, channel=Channel.CHAT, session_id="s-long", visitor_id="v_" + "d" * 64
    )
    Message.objects.create(conversation=conversation, role="user", text="Hello")
    page = signed_in(owner)
    for width in (1024, 1280, 1366, 1440):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}/app/licenses/")
        probe = page.evaluate(LAYOUT_PROBE)
        assert probe["navHidden"] <= 0 and probe["pageOverflow"] <= 0, (width, probe)
        assert len(probe["meters"]) == 3, probe
        for meter in probe["meters"]:
            assert meter["label"] >= 14 and meter["track"] == 8, (width, meter)
            assert meter["labelBackground"] == "rgba(0, 0, 0, 0)", (width, meter)
        page.goto(f"{live_server.url}/app/conversations/{conversation.pk}/")
        probe = page.evaluate(LAYOUT_PROBE)
        assert probe["navHidden"] <= 0 and probe["pageOverflow"] <= 0, (width, probe)
        if width > 1100:  # side by side above 1100 px, stacked below
            assert len(set(probe["cards"])) == 1, (width, probe["cards"])
