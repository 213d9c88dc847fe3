"""Analytics (issue 13.3): the daily rollup against hand-computed figures, the page, the rebilling CSV."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from widgets import analytics
from widgets.models import Channel, Conversation, DailyQuestion, DailyStat, Lead, Message

pytestmark = pytest.mark.django_db

SESSIONS = itertools.count()
TODAY = timezone.now().date()
DAY = TODAY - timedelta(days=2)
NOON = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)


def conv(widget, *, at=NOON, channel=Channel.CHAT, turns=(), **fields):
    c = Conversation.objects.create(widget=widget, channel=channel, session_id=f"s{next(SESSIONS)}", **fields)
    Conversation.objects.filter(pk=c.pk).update(started_at=at)
    for i, (text, failure) in enumerate(turns):
        m = Message.objects.create(conversation=c, role="user", text=text, failure_kind=failure)
        Message.objects.filter(pk=m.pk).update(created_at=at + timedelta(seconds=i))
    return c


@pytest.fixture
def day_data(widget_a, widget_b):
    chat = conv(widget_a, turns=[("Phones under $500?", ""), ("and cases", ""), ("hello?", "upstream_timeout")])
    voice = conv(
        widget_a,
        channel=Channel.VOICE,
        turns=[("phones   under 500", "")],
        audio_in_seconds=90,
        cost_usd=Decimal("0.05"),
        usage={"total_tokens": 1000},
    )
    conv(
        widget_a,
        channel=Channel.CHATKIT,
        turns=[("Opening hours?", "")],
        cost_usd=Decimal("0.01"),
        usage={"input_tokens": 100, "output_tokens": 50},
    )
    conv(widget_a, turns=[("preview", "")], is_preview=True)
    yesterday = conv(widget_a, at=NOON - timedelta(days=1), turns=[("earlier", "")])
    late = Message.objects.create(conversation=yesterday, role="user", text="back again")
    Message.objects.filter(pk=late.pk).update(created_at=NOON)  # a turn on DAY of a conversation of the day before
    lead = Lead.objects.create(widget=widget_a, conversation=voice, name="Ada", email="a@example.com", source="voice")
    Lead.objects.filter(pk=lead.pk).update(created_at=NOON)
    conv(widget_b, turns=[("B's question", "")])
    return {"chat": chat, "voice": voice}


def stats(widget):
    return {
        s.channel: (s.conversations, s.turns, s.failed_turns, s.voice_seconds, s.tokens, s.cost_usd, s.leads)
        for s in DailyStat.objects.filter(widget=widget, day=DAY)
    }


def test_rollup_matches_hand_computed_figures_and_is_idempotent(day_data, widget_a, widget_b):
    for _ in range(2):
        analytics.rollup_day(DAY)
        assert stats(widget_a) == {
            Channel.CHAT: (1, 4, 1, 0.0, 0, Decimal("0"), 0),  # 3 turns + the late turn of yesterday's chat
            Channel.VOICE: (1, 1, 0, 90.0, 1000, Decimal("0.05"), 1),
            Channel.CHATKIT: (1, 1, 0, 0.0, 150, Decimal("0.01"), 0),
        }
        questions = dict(DailyQuestion.objects.filter(widget=widget_a, day=DAY).values_list("question", "count"))
        assert questions == {"phones under 500": 2, "opening hours": 1}
    assert stats(widget_b) == {Channel.CHAT: (1, 1, 0, 0.0, 0, Decimal("0"), 0)}
    assert DailyStat.objects.filter(day=DAY).count() == 4


def test_rollup_for_some_widgets_leaves_the_others(day_data, widget_a, widget_b):
    analytics.rollup_day(DAY)
    Message.objects.filter(conversation__widget=widget_b).delete()
    analytics.rollup_day(DAY, widget_ids=[widget_a.pk])
    assert stats(widget_b) == {Channel.CHAT: (1, 1, 0, 0.0, 0, Decimal("0"), 0)}  # untouched


def test_report(day_data, agency_a, license_a):
    analytics.rollup_day(DAY)
    report = analytics.report(agency=agency_a, days=7, today=TODAY)
    assert len(report.days) == 7 and report.days[-1]["day"] == TODAY
    day = next(d for d in report.days if d["day"] == DAY)
    assert day["by_channel"] == {"chat": 1, "chatkit": 1, "voice": 1}
    assert (day["conversations"], day["turns"], day["failed_turns"], day["leads"]) == (3, 6, 1, 1)
    assert day["voice_minutes"] == 1.5 and day["tokens"] == 1150 and day["cost_usd"] == Decimal("0.06")
    assert report.totals["conversations"] == 3 and round(report.totals["failure_rate"], 3) == round(1 / 6, 3)
    assert report.questions == [("phones under 500", 2), ("opening hours", 1)]
    assert [u["license"] for u in report.usage] == [license_a]


def test_page_for_every_persona_and_outsiders(client, day_data, owner, member, viewer, outsider, license_b):
    analytics.rollup_day(DAY)
    url = reverse("app-analytics")
    assert client.get(url).status_code == 302
    for user in (owner, member, viewer):
        client.force_login(user)
        page = client.get(url, {"days": 7})
        assert page.status_code == 200
        html = page.content.decode()
        assert page.context["report"].totals["conversations"] == 3
        assert html.count("<svg") == 4 and "<rect" in html and "phones under 500" in html
    # Another agency's license key is not one of A's clients: ignored, never B's figures.
    assert client.get(url, {"client": license_b.key}).context["license"] is None
    client.force_login(outsider)
    report = client.get(url, {"days": 7}).context["report"]
    assert report.totals["conversations"] == 1 and report.questions == [("b s question", 1)]


def test_page_queries_do_not_grow_with_the_data(client, widget_a, viewer):
    client.force_login(viewer)
    url = reverse("app-analytics")
    client.get(url)  # today's on-demand rollup runs at most once a minute: the measured views read only
    counts = []
    for days_with_data in (1, 30):
        DailyStat.objects.all().delete()
        for d in range(days_with_data):
            for channel in Channel.values:
                DailyStat.objects.create(
                    day=TODAY - timedelta(days=d), widget=widget_a, channel=channel, conversations=2
                )
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url, {"days": 30}).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1] and counts[1] <= 10


def test_rebilling_csv(client, day_data, viewer, license_a, widget_a):
    license_a.client_name = "=SUM(A1)"
    license_a.save()
    analytics.rollup_day(DAY)
    client.force_login(viewer)
    response = client.get(reverse("app-analytics-csv"), {"days": 7})
    assert response["Content-Disposition"].startswith('attachment; filename="usage-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["day"], r["client"], r["conversations"], r["voice_minutes"], r["tokens"], r["leads"]) for r in rows] == [
        (DAY.isoformat(), "'=SUM(A1)", "3", "1.5", "1150", "1")
    ]


def test_beat_rolls_up(settings):
    from config.celery import app

    entry = app.conf.beat_schedule["analytics-rollup"]
    assert entry["task"] == "widgets.tasks.analytics_rollup"
    assert entry["schedule"] == float(settings.ANALYTICS_ROLLUP_SECONDS)


def test_question_normalize():
    assert analytics.question_normalize("  Do you ship   to CANADA?!  ") == "do you ship to canada"
    assert analytics.question_normalize("¿Tienen envío?") == "tienen envío"
    assert len(analytics.question_normalize("x" * 500)) == 200


def test_staff_view_across_agencies_flags_licenses_near_caps_or_expiry(
    client, day_data, staff, owner, license_a, license_b, settings
):
    from licenses.models import LicenseUsage, month_start

    analytics.rollup_day(DAY)
    LicenseUsage.objects.create(license=license_a, month=month_start(TODAY), conversations=850)  # cap 1000: 85%
    license_b.expires_at = timezone.now() + timedelta(days=3)
    license_b.save()
    url = reverse("admin-analytics")
    assert client.get(url).status_code == 302  # the admin login
    client.force_login(owner)  # an agency owner is not platform staff
    assert client.get(url).status_code == 302
    client.force_login(staff)
    response = client.get(url, {"days": 7})
    assert response.status_code == 200
    report = response.context["report"]
    assert {a["widget__license__agency__slug"]: a["conversations"] for a in report["agencies"]} == {
        "agency-a": 3,
        "agency-b": 1,
    }
    flagged = {f["license"].key: f["reasons"] for f in report["flagged"]}
    assert flagged[license_a.key] == ["conversations 850 of 1000 (85%)"]
    assert flagged[license_b.key][0].startswith("expires ")
    assert "85%" in response.content.decode()
