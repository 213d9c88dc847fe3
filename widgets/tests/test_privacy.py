"""Retention and visitor privacy (issue 13.6): the nightly window, a visitor's export and erasure, the
audit log, and who may do what."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from chatkit.models import ChatKitItem, ChatKitThread
from licenses.api import ApiError
from licenses.models import AuditEvent, Membership
from licenses.services import agency_retention_set
from licenses.tests.factories import MembershipFactory, UserFactory
from widgets import privacy
from widgets.models import Channel, Conversation, Lead, Message

pytestmark = pytest.mark.django_db

NOW = timezone.now()


SESSIONS = itertools.count()


def conversation(widget, *, days_ago: float, visitor: str = "v_1", messages: int = 2, channel=Channel.CHAT):
    session = f"s{next(SESSIONS)}"
    conv = Conversation.objects.create(widget=widget, channel=channel, visitor_id=visitor, session_id=session)
    Conversation.objects.filter(pk=conv.pk).update(started_at=NOW - timedelta(days=days_ago))
    for i in range(messages):
        message(conv, days_ago=days_ago, text=f"turn {i}")
    return conv


def message(conv, *, days_ago: float, text: str = "hello"):
    m = Message.objects.create(conversation=conv, role=Message.Role.USER, text=text)
    Message.objects.filter(pk=m.pk).update(created_at=NOW - timedelta(days=days_ago))
    return m


def lead(widget, *, days_ago: float, conv=None, email: str = "ada@example.com"):
    lead = Lead.objects.create(widget=widget, conversation=conv, source="chat", name="Ada", email=email)
    Lead.objects.filter(pk=lead.pk).update(created_at=NOW - timedelta(days=days_ago))
    return lead


@pytest.fixture
def admin_a(agency_a):
    user = UserFactory(username="admin-a")
    MembershipFactory(user=user, agency=agency_a, role=Membership.Role.ADMIN)
    return user


# --- retention -----------------------------------------------------------------------------------


def test_retention_deletes_exactly_what_is_past_the_window(agency_a, widget_a, widget_b, monkeypatch):
    monkeypatch.setattr(privacy, "BATCH", 1)  # every batch boundary is crossed
    agency_a.retention_days = 30
    agency_a.save()
    expired = conversation(widget_a, days_ago=40)
    just_past = conversation(widget_a, days_ago=30.01, messages=1)
    thread = ChatKitThread.objects.create(
        thread_id="thr_old", widget=widget_a, owner="sb_x", conversation=expired, created_at=NOW, data={}
    )
    ChatKitItem.objects.create(thread=thread, item_id="msg_1", created_at=NOW, data={})
    revived = conversation(widget_a, days_ago=40)
    message(revived, days_ago=2)  # a visitor came back: still in use
    inside = conversation(widget_a, days_ago=29.9)
    live = conversation(widget_a, days_ago=40, channel=Channel.VOICE, messages=0)
    Conversation.objects.filter(pk=live.pk).update(heartbeat_at=NOW)
    old_lead = lead(widget_a, days_ago=31, conv=expired)
    new_lead = lead(widget_a, days_ago=3, conv=inside)
    other_agency = conversation(widget_b, days_ago=400)  # agency B keeps everything
    other_lead = lead(widget_b, days_ago=400)

    done = privacy.retention_apply(now=NOW)

    assert done == {"agency-a": {"conversation": 2, "message": 3, "lead": 1}}
    assert set(Conversation.objects.values_list("pk", flat=True)) == {revived.pk, inside.pk, live.pk, other_agency.pk}
    assert not Message.objects.filter(conversation_id__in=[expired.pk, just_past.pk]).exists()
    assert Message.objects.filter(conversation=revived).count() == 3
    assert not ChatKitThread.objects.exists() and not ChatKitItem.objects.exists()
    assert set(Lead.objects.values_list("pk", flat=True)) == {new_lead.pk, other_lead.pk}
    assert old_lead.pk not in Lead.objects.values_list("pk", flat=True)
    event = AuditEvent.objects.get()
    assert (event.agency, event.actor, event.action) == (agency_a, None, AuditEvent.Action.RETENTION_APPLIED)
    assert event.details == {"days": 30, "conversation": 2, "message": 3, "lead": 1}


def test_retention_run_with_nothing_to_delete_is_still_audited(agency_a, widget_a):
    agency_a.retention_days = 90
    agency_a.save()
    conversation(widget_a, days_ago=10)
    assert privacy.retention_apply(now=NOW) == {"agency-a": {"conversation": 0, "message": 0, "lead": 0}}
    assert Conversation.objects.count() == 1
    assert AuditEvent.objects.get().details == {"days": 90, "conversation": 0, "message": 0, "lead": 0}


def test_beat_runs_retention_nightly(settings):
    from config.celery import app

    entry = app.conf.beat_schedule["retention-apply"]
    assert entry["task"] == "widgets.tasks.retention_apply"
    assert entry["schedule"].hour == {settings.RETENTION_HOUR}


def test_retention_set_by_roles(agency_a, agency_b, owner, member, viewer, outsider):
    owner_m = owner.memberships.get()
    agency_retention_set(actor=owner_m, agency=agency_a, days=90)
    agency_a.refresh_from_db()
    assert agency_a.retention_days == 90
    event = AuditEvent.objects.get()
    assert (event.action, event.actor, event.details) == (
        AuditEvent.Action.RETENTION_SET,
        owner,
        {"old_days": None, "new_days": 90},
    )
    for user in (member, viewer, outsider):
        with pytest.raises(ApiError) as refused:
            agency_retention_set(actor=user.memberships.get(), agency=agency_a, days=None)
        assert refused.value.status_code == 403
    with pytest.raises(ApiError) as invalid:
        agency_retention_set(actor=owner_m, agency=agency_a, days=45)
    assert invalid.value.status_code == 400 and "retention_days" in invalid.value.fields
    agency_a.refresh_from_db()
    assert agency_a.retention_days == 90
    assert AuditEvent.objects.count() == 1  # refusals and no-ops write nothing


# --- the page ------------------------------------------------------------------------------------


def test_privacy_page_for_every_persona(client, owner, admin_a, member, viewer, outsider, agency_b):
    url = reverse("app-privacy")
    assert client.get(url).status_code == 302  # anonymous → login
    for user, manages in ((owner, True), (admin_a, True), (member, False), (viewer, False)):
        client.force_login(user)
        page = client.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert ('name="visitor_id"' in html) is manages
        assert ("disabled" in html.split('id="id_retention_days"')[1].split(">")[0]) is not manages
    client.force_login(outsider)  # agency B's page shows agency B, never A's log
    AuditEvent.objects.create(agency=owner.memberships.get().agency, action=AuditEvent.Action.RETENTION_SET)
    assert "Retention changed" not in client.get(url).content.decode()


def test_retention_form(client, owner, member, agency_a):
    client.force_login(member)
    assert client.post(reverse("app-privacy"), {"retention_days": "30"}).status_code == 403
    client.force_login(owner)
    assert client.post(reverse("app-privacy"), {"retention_days": "abc"}).status_code == 400
    response = client.post(reverse("app-privacy"), {"retention_days": "30"}, follow=True)
    assert response.status_code == 200
    assert "kept for 30 days" in response.content.decode()
    agency_a.refresh_from_db()
    assert agency_a.retention_days == 30
    client.post(reverse("app-privacy"), {"retention_days": ""})
    agency_a.refresh_from_db()
    assert agency_a.retention_days is None


# --- a visitor's data ----------------------------------------------------------------------------


@pytest.fixture
def visitor_data(widget_a, widget_b):
    mine = [conversation(widget_a, days_ago=3), conversation(widget_a, days_ago=1, channel=Channel.VOICE)]
    by_email = conversation(widget_a, days_ago=2, visitor="v_9")  # the same person on another device
    lead(widget_a, days_ago=2, conv=by_email, email="Ada@Example.com")
    lead(widget_a, days_ago=3, conv=mine[0])
    anonymous = conversation(widget_a, days_ago=1, visitor="")  # no visitor id: nobody's
    lead(widget_a, days_ago=1, conv=anonymous, email="ada@example.com")
    other_visitor = conversation(widget_a, days_ago=1, visitor="v_2")
    other_tenant = conversation(widget_b, days_ago=1)  # agency B also has a "v_1"
    lead(widget_b, days_ago=1, conv=other_tenant)
    return {"mine": mine, "by_email": by_email, "anonymous": anonymous, "keep": [other_visitor, other_tenant]}


def test_find_by_visitor_id_and_by_email(client, owner, visitor_data):
    client.force_login(owner)
    page = client.get(reverse("app-privacy"), {"visitor_id": "v_1"}).content.decode()
    assert "Found 2 conversations, 4 messages and 1 lead" in page
    page = client.get(reverse("app-privacy"), {"email": "ada@example.com"}).content.decode()
    # v_1 and v_9 left leads with that email (any case): both visitors' conversations; the visitor-less
    # conversation's lead matches by its email, the conversation itself does not.
    assert "Found 3 conversations, 6 messages and 3 leads" in page
    assert client.get(reverse("app-privacy"), {"email": "not-an-email"}).status_code == 400


def test_export_is_this_agencys_data_only_and_audited(client, owner, visitor_data):
    client.force_login(owner)
    response = client.post(reverse("app-privacy-visitor"), {"action": "export", "visitor_id": "v_1"})
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="visitor-data-')
    assert response["Cache-Control"] == "no-store"
    document = json.loads(response.content)
    assert sorted(c["id"] for c in document["conversations"]) == sorted(c.pk for c in visitor_data["mine"])
    assert [m["text"] for m in document["conversations"][0]["messages"]] == ["turn 0", "turn 1"]
    assert [lead["email"] for lead in document["leads"]] == ["ada@example.com"]
    event = AuditEvent.objects.get()
    assert (event.action, event.actor, event.target) == (AuditEvent.Action.VISITOR_EXPORTED, owner, "visitor v_1")
    assert event.details == {"conversations": 2, "messages": 4, "leads": 1}


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_visitor_tools_refuse_editors_and_viewers(client, persona, request, visitor_data):
    client.force_login(request.getfixturevalue(persona))
    assert client.get(reverse("app-privacy"), {"visitor_id": "v_1"}).status_code == 403
    for action in ("export", "erase"):
        body = {"action": action, "visitor_id": "v_1", "confirm": "yes"}
        assert client.post(reverse("app-privacy-visitor"), body).status_code == 403
    assert Conversation.objects.count() == 6 and not AuditEvent.objects.exists()


def test_another_agency_reaches_only_its_own_visitor(client, outsider, visitor_data):
    client.force_login(outsider)  # agency B's owner; agency B also has a "v_1"
    document = client.post(reverse("app-privacy-visitor"), {"action": "export", "visitor_id": "v_1"}).json()
    assert [c["id"] for c in document["conversations"]] == [visitor_data["keep"][1].pk]
    body = {"action": "erase", "visitor_id": "v_1", "confirm": "yes"}
    assert client.post(reverse("app-privacy-visitor"), body).status_code == 302
    assert not Conversation.objects.filter(pk=visitor_data["keep"][1].pk).exists()
    assert Conversation.objects.filter(pk__in=[c.pk for c in visitor_data["mine"]]).count() == 2


def test_erase_needs_confirmation_then_deletes_exactly_the_visitors_data(client, admin_a, visitor_data):
    client.force_login(admin_a)
    url = reverse("app-privacy-visitor")
    refused = client.post(url, {"action": "erase", "email": "ada@example.com", "visitor_id": "v_1"})
    assert refused.status_code == 400
    assert "Tick the box" in refused.content.decode()
    assert Conversation.objects.count() == 6 and not AuditEvent.objects.exists()

    done = client.post(url, {"action": "erase", "email": "ada@example.com", "visitor_id": "v_1", "confirm": "yes"})
    assert done.status_code == 302
    erased = [c.pk for c in visitor_data["mine"]] + [visitor_data["by_email"].pk]
    assert not Conversation.objects.filter(pk__in=erased).exists()
    assert not Message.objects.filter(conversation_id__in=erased).exists()
    kept = [c.pk for c in visitor_data["keep"]] + [visitor_data["anonymous"].pk]
    assert set(Conversation.objects.values_list("pk", flat=True)) == set(kept)
    assert list(Lead.objects.values_list("widget__license__agency__slug", flat=True)) == ["agency-b"]
    event = AuditEvent.objects.get()
    assert (event.action, event.actor) == (AuditEvent.Action.VISITOR_ERASED, admin_a)
    assert event.target == "visitor v_1, email a***@example.com"  # the log outlives the erasure
    assert event.details == {"conversations": 3, "messages": 6, "leads": 3}
    page = client.get(reverse("app-privacy")).content.decode()
    assert "Visitor data erased" in page


def test_unknown_action_and_empty_lookup_are_refused(client, owner, visitor_data):
    client.force_login(owner)
    assert client.post(reverse("app-privacy-visitor"), {"action": "export"}).status_code == 400
    assert client.post(reverse("app-privacy-visitor"), {"action": "delete", "visitor_id": "v_1"}).status_code == 400
    assert Conversation.objects.count() == 6 and not AuditEvent.objects.exists()
