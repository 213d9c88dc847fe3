"""`widgets.selectors.chat_session_lookup`: a new chat session's check (its conversation, the license's
monthly quota) in one statement, with the answers of `chat_conversation_find` and `license_quota_left`."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from licenses.models import LicenseUsage, month_start
from licenses.selectors import license_quota_left
from widgets.models import Channel, Conversation
from widgets.selectors import chat_conversation_find, chat_session_lookup

pytestmark = pytest.mark.django_db


def lookup(widget, session_id: str) -> tuple[int | None, int]:
    return chat_session_lookup(widget=widget, license=widget.license, session_id=session_id)


def test_finds_the_sessions_chat_conversation_and_nothing_else(widget_a, widget_b):
    # Same session id elsewhere: a preview, a voice call, another widget (another tenant): none is it.
    Conversation.objects.create(widget=widget_a, channel=Channel.CHAT, session_id="s-1", is_preview=True)
    Conversation.objects.create(widget=widget_a, channel=Channel.VOICE, session_id="s-1")
    Conversation.objects.create(widget=widget_b, channel=Channel.CHAT, session_id="s-1")
    assert lookup(widget_a, "s-1")[0] is None
    assert chat_conversation_find(widget=widget_a, session_id="s-1") is None
    mine = Conversation.objects.create(widget=widget_a, channel=Channel.CHAT, session_id="s-1")
    assert lookup(widget_a, "s-1")[0] == mine.pk == chat_conversation_find(widget=widget_a, session_id="s-1").pk
    assert lookup(widget_a, "s-2")[0] is None
    assert lookup(widget_a, "")[0] is None


def test_quota_left_counts_this_months_conversations_and_chatkit_sessions(widget_a, widget_b):
    license = widget_a.license
    license.limits = {**license.limits, "monthly_conversations": 10}
    license.save()
    assert lookup(widget_a, "s")[1] == 10 == license_quota_left(license=license, kind="conversations")  # no row
    this_month = month_start(timezone.now().date())
    LicenseUsage.objects.create(license=license, month=this_month, conversations=3, chatkit_sessions=2)
    LicenseUsage.objects.create(license=license, month=date(2001, 1, 1), conversations=100)  # another month
    LicenseUsage.objects.create(license=widget_b.license, month=this_month, conversations=100)  # another license
    assert lookup(widget_a, "s")[1] == 5 == license_quota_left(license=license, kind="conversations")
    LicenseUsage.objects.filter(license=license, month=this_month).update(conversations=12)
    assert lookup(widget_a, "s")[1] == -4 == license_quota_left(license=license, kind="conversations")


def test_is_one_statement(widget_a):
    mine = Conversation.objects.create(widget=widget_a, channel=Channel.CHAT, session_id="s-1")
    license = widget_a.license
    with CaptureQueriesContext(connection) as ctx:
        found = chat_session_lookup(widget=widget_a, license=license, session_id="s-1")
    assert found[0] == mine.pk
    assert len(ctx.captured_queries) == 1
