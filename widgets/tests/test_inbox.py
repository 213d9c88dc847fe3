"""The inbox and leads pages (issue 13.1, 13.2): every conversation and lead of the agency, filters,
search, keyset pages, CSV exports, Retry delivery — and nothing of another agency's."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from widgets import inbox
from widgets.chat import visitor_page_url
from widgets.models import Channel, Conversation, Lead, Message
from widgets.services.turns import chat_turn_record
from widgets.tests.conftest import product_cards_payload

pytestmark = pytest.mark.django_db

SESSIONS = itertools.count()
NOW = timezone.now()


def conv(widget, *, minutes_ago=0, channel=Channel.CHAT, turns=(("hi", "hello"),), failed="", end_reason="", **extra):
    c = Conversation.objects.create(
        widget=widget, channel=channel, session_id=f"s{next(SESSIONS)}", end_reason=end_reason, **extra
    )
    Conversation.objects.filter(pk=c.pk).update(started_at=NOW - timedelta(minutes=minutes_ago))
    for user, bot in turns:
        Message.objects.create(conversation=c, role="user", text=user)
        if bot is not None:
            Message.objects.create(
                conversation=c,
                role="assistant",
                text=bot.get("text", "") if isinstance(bot, dict) else bot,
                payload=bot.get("payload", {}) if isinstance(bot, dict) else {},
            )
    if failed:
        Message.objects.create(
            conversation=c, role="user", text="are you there?", failure_kind=failed, upstream_status=504
        )
    c.refresh_from_db()
    return c


CARDS = {"text": "Two phones fit.", "payload": product_cards_payload()}


@pytest.fixture
def data(widget_a, widget_b, license_a):
    ok = conv(
        widget_a,
        minutes_ago=1,
        turns=(("phones under 500?", CARDS),),
        visitor_id="v_ok",
        page_url="https://shop.example.com/phones",
    )
    voice = conv(
        widget_a,
        minutes_ago=2,
        channel=Channel.VOICE,
        turns=(("trade in my iphone", "sure"),),
        cost_usd="0.0420",
        audio_in_seconds=12,
    )
    failed = conv(widget_a, minutes_ago=3, failed="upstream_timeout")
    chatkit_failed = conv(
        widget_a, minutes_ago=4, channel=Channel.CHATKIT, turns=(), end_reason="failed:invalid_api_key"
    )
    abandoned = conv(widget_a, minutes_ago=5, channel=Channel.VOICE, turns=(("hello?", None),))
    old = conv(widget_a, minutes_ago=60 * 24 * 10, turns=(("last week", "ok"),))
    preview = conv(widget_a, minutes_ago=1, is_preview=True)
    other = conv(widget_b, minutes_ago=1, turns=(("phones under 500?", "B's answer"),))
    Lead.objects.create(widget=widget_a, conversation=voice, name="Ada", email="ada@example.com", source="voice")
    return {
        "ok": ok,
        "voice": voice,
        "failed": failed,
        "chatkit_failed": chatkit_failed,
        "abandoned": abandoned,
        "old": old,
        "preview": preview,
        "other": other,
    }


def listed(response) -> list[int]:
    return [c.pk for c in response.context["page"].rows]


def test_every_member_sees_the_agencys_conversations_and_nothing_else(client, data, owner, member, viewer, outsider):
    url = reverse("app-conversations")
    assert client.get(url).status_code == 302
    expected = [data[k].pk for k in ("ok", "voice", "failed", "chatkit_failed", "abandoned", "old")]
    for user in (owner, member, viewer):
        client.force_login(user)
        response = client.get(url)
        assert response.status_code == 200
        assert listed(response) == expected  # newest first, no preview, no other agency
    client.force_login(outsider)
    assert listed(client.get(url)) == [data["other"].pk]


def test_status_lead_turns_and_cost(client, data, viewer):
    client.force_login(viewer)
    rows = {c.pk: c for c in client.get(reverse("app-conversations")).context["page"].rows}
    assert {k: rows[data[k].pk].status for k in ("ok", "voice", "failed", "chatkit_failed", "abandoned")} == {
        "ok": "ok",
        "voice": "ok",
        "failed": "failed",
        "chatkit_failed": "failed",
        "abandoned": "abandoned",
    }
    assert rows[data["voice"].pk].has_lead and not rows[data["ok"].pk].has_lead
    assert rows[data["failed"].pk].turns == 2 and rows[data["chatkit_failed"].pk].turns == 0


@pytest.mark.parametrize(
    "params, keys",
    [
        ({"channel": "voice"}, ["voice", "abandoned"]),
        ({"status": "failed"}, ["failed", "chatkit_failed"]),
        ({"status": "abandoned"}, ["abandoned"]),
        ({"status": "ok", "channel": "chat"}, ["ok", "old"]),
        ({"q": "iphone"}, ["voice"]),
        ({"q": "phones 500"}, ["ok"]),
        (
            {"since": (NOW - timedelta(days=2)).date().isoformat()},
            ["ok", "voice", "failed", "chatkit_failed", "abandoned"],
        ),
        ({"until": (NOW - timedelta(days=5)).date().isoformat()}, ["old"]),
    ],
)
def test_filters(client, data, viewer, params, keys):
    client.force_login(viewer)
    assert listed(client.get(reverse("app-conversations"), params)) == [data[k].pk for k in keys]


def test_client_and_widget_filters(client, data, viewer, widget_a, license_a):
    client.force_login(viewer)
    assert len(listed(client.get(reverse("app-conversations"), {"client": license_a.key}))) == 6
    assert len(listed(client.get(reverse("app-conversations"), {"widget": widget_a.public_id}))) == 6
    assert listed(client.get(reverse("app-conversations"), {"widget": data["other"].widget.public_id})) == []


@pytest.mark.parametrize(
    "params",
    [{"channel": "fax"}, {"status": "meh"}, {"since": "2026-13-45"}, {"until": "yesterday"}],
)
def test_bad_filters_are_form_errors(client, data, viewer, params):
    client.force_login(viewer)
    assert client.get(reverse("app-conversations"), params).status_code == 400


def test_bad_cursors_and_hostile_search_never_fail(client, data, viewer):
    client.force_login(viewer)
    for params in ({"before": "garbage"}, {"after": "2026-01-01~x"}, {"before": "9999-99-99~1"}, {"q": "a & | ! ( :*"}):
        assert client.get(reverse("app-conversations"), params).status_code == 200


def test_keyset_pages(client, widget_a, viewer):
    rows = [conv(widget_a, minutes_ago=i, turns=()) for i in range(inbox.PAGE_SIZE * 2 + 20)]
    client.force_login(viewer)
    url = reverse("app-conversations")
    first = client.get(url).context["page"]
    assert [c.pk for c in first.rows] == [c.pk for c in rows[: inbox.PAGE_SIZE]] and first.newer == ""
    second = client.get(url, {"before": first.older}).context["page"]
    assert [c.pk for c in second.rows] == [c.pk for c in rows[inbox.PAGE_SIZE : inbox.PAGE_SIZE * 2]]
    third = client.get(url, {"before": second.older}).context["page"]
    assert [c.pk for c in third.rows] == [c.pk for c in rows[inbox.PAGE_SIZE * 2 :]] and third.older == ""
    back = client.get(url, {"after": second.newer}).context["page"]
    assert [c.pk for c in back.rows] == [c.pk for c in first.rows] and back.newer == ""


def test_the_list_costs_the_same_queries_at_any_size(client, widget_a, viewer):
    client.force_login(viewer)
    url = reverse("app-conversations")
    client.get(url)  # warm the session and the user
    counts = []
    for n in (3, 60):
        Conversation.objects.all().delete()
        for i in range(n):
            conv(widget_a, minutes_ago=i)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url, {"status": "ok", "q": "hi"}).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1] and counts[1] <= 10


def test_conversation_page(client, data, viewer, outsider):
    client.force_login(viewer)
    page = client.get(reverse("app-conversation", args=[data["ok"].pk])).content.decode()
    assert 'data-ui="product_cards"' in page and "Pixel 7" in page and "449.00 USD" in page
    assert "https://shop.example.com/phones" in page and "v_ok" in page
    failed = client.get(reverse("app-conversation", args=[data["failed"].pk])).content.decode()
    assert 'No answer: <span class="mono">upstream_timeout</span> · upstream HTTP 504' in failed
    voice = client.get(reverse("app-conversation", args=[data["voice"].pk])).content.decode()
    assert "$0.0420" in voice and "12.0 s in" in voice and "ada@example.com" in voice
    assert client.get(reverse("app-conversation", args=[data["preview"].pk])).status_code == 404
    client.force_login(outsider)
    assert client.get(reverse("app-conversation", args=[data["ok"].pk])).status_code == 404


def test_csv_export(client, data, viewer, outsider, widget_a):
    hostile = conv(widget_a, minutes_ago=0, visitor_id='=HYPERLINK("https://evil.example","x")')
    client.force_login(viewer)
    response = client.get(reverse("app-conversations-csv"), {"channel": "chat"})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="conversations-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [int(r["id"]) for r in rows] == [hostile.pk, data["ok"].pk, data["failed"].pk, data["old"].pk]
    assert rows[0]["visitor_id"].startswith("'=HYPERLINK")  # a spreadsheet shows it, never runs it
    assert rows[1]["page_url"] == "https://shop.example.com/phones" and rows[2]["status"] == "failed"
    client.force_login(outsider)
    rows = list(
        csv.DictReader(io.StringIO(b"".join(client.get(reverse("app-conversations-csv")).streaming_content).decode()))
    )
    assert [int(r["id"]) for r in rows] == [data["other"].pk]


def test_the_visitors_page_is_kept_from_chat(widget_a):
    assert visitor_page_url({"page": "https://shop.example.com/x?y=1"}) == "https://shop.example.com/x?y=1"
    for bad in ("javascript:alert(1)", 42, None, "https://x/" + "a" * 600):
        assert visitor_page_url({"page": bad}) == ""
    pk = chat_turn_record(
        widget=widget_a,
        session_id="s-page",
        visitor_id="v",
        user_text="hi",
        reply_text="hello",
        page_url="https://shop.example.com/x",
    )
    assert Conversation.objects.get(pk=pk).page_url == "https://shop.example.com/x"


# --- leads -------------------------------------------------------------------------------------------


@pytest.fixture
def leads(widget_a, widget_b):
    failed = Lead.objects.create(
        widget=widget_a,
        name="Ann",
        email="ann@example.com",
        source="chat",
        delivery_status=Lead.Delivery.FAILED,
        delivery_attempts=6,
        last_error="HTTP 503",
    )
    delivered = Lead.objects.create(
        widget=widget_a,
        name="Bob",
        email="bob@example.com",
        source="voice",
        delivery_status=Lead.Delivery.DELIVERED,
        phone="+1 555",
    )
    hostile = Lead.objects.create(widget=widget_a, name="=cmd|' /C calc'!A0", email="x@example.com", source="chat")
    other = Lead.objects.create(
        widget=widget_b, name="Other", email="o@example.com", source="chat", delivery_status=Lead.Delivery.FAILED
    )
    return {"failed": failed, "delivered": delivered, "hostile": hostile, "other": other}


def test_leads_page(client, leads, viewer, outsider):
    client.force_login(viewer)
    response = client.get(reverse("app-leads"))
    assert [lead.pk for lead in response.context["page"].object_list] == [
        leads["hostile"].pk,
        leads["delivered"].pk,
        leads["failed"].pk,
    ]
    assert "Retry delivery" not in response.content.decode()  # viewers read
    assert [
        lead.pk for lead in client.get(reverse("app-leads"), {"delivery": "failed"}).context["page"].object_list
    ] == [leads["failed"].pk]
    assert [lead.pk for lead in client.get(reverse("app-leads"), {"q": "555"}).context["page"].object_list] == [
        leads["delivered"].pk
    ]
    assert client.get(reverse("app-leads"), {"delivery": "lost"}).status_code == 400
    client.force_login(outsider)
    assert [lead.pk for lead in client.get(reverse("app-leads")).context["page"].object_list] == [leads["other"].pk]


def test_retry_delivery(client, leads, member, viewer, outsider, django_capture_on_commit_callbacks):
    url = reverse("app-lead-retry", args=[leads["failed"].pk])
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    client.force_login(outsider)
    assert client.post(url).status_code == 404
    client.force_login(member)
    assert "Retry delivery" in client.get(reverse("app-leads")).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url).status_code == 302
    lead = Lead.objects.get(pk=leads["failed"].pk)
    # Enqueued and run (eager Celery): agency A has no CRM webhook, so the delivery task skips it.
    assert (lead.delivery_status, lead.delivery_attempts, lead.last_error) == (Lead.Delivery.SKIPPED, 0, "")
    response = client.post(reverse("app-lead-retry", args=[leads["delivered"].pk]), follow=True)
    assert "already delivered" in response.content.decode()
    assert Lead.objects.get(pk=leads["delivered"].pk).delivery_status == Lead.Delivery.DELIVERED
    assert client.get(reverse("app-lead-retry", args=[leads["failed"].pk])).status_code == 405


def test_leads_csv(client, leads, viewer):
    client.force_login(viewer)
    response = client.get(reverse("app-leads-csv"))
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [int(r["id"]) for r in rows] == [leads["hostile"].pk, leads["delivered"].pk, leads["failed"].pk]
    assert rows[0]["name"] == "'=cmd|' /C calc'!A0"
    assert rows[2]["delivery_status"] == "failed" and rows[2]["last_error"] == "HTTP 503"


def test_search_of_a_common_word_takes_the_join_path(client, data, viewer, monkeypatch):
    monkeypatch.setattr(inbox, "SEARCH_IDS_MAX", 1)  # any term now counts as common
    client.force_login(viewer)
    assert listed(client.get(reverse("app-conversations"), {"q": "phones 500"})) == [data["ok"].pk]
