"""Bot-down alerts (issue 13.4): an incident opens once when a widget stops answering, the agency is told
once by email and signed webhook, the widget list shows it, and it closes with one recovered notice."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from licenses import branding
from licenses.api import ApiError
from widgets import health
from widgets.models import Channel, Conversation, Incident, Message

pytestmark = pytest.mark.django_db

SESSIONS = itertools.count()


@pytest.fixture(autouse=True)
def _retries_run_inline():
    from config.celery import app

    app.conf.task_eager_propagates = False
    yield
    app.conf.task_eager_propagates = True


@pytest.fixture
def scan(django_capture_on_commit_callbacks):
    """A health scan at `now` with its notifications run (Celery is eager in tests)."""

    def run(now):
        with django_capture_on_commit_callbacks(execute=True):
            return health.health_scan(now=now)

    return run


def turns(widget, outcomes: str, *, at, channel=Channel.CHAT, preview=False):
    """One visitor turn per letter, a second apart ending at `at`: "o" answered, "x" failed (timeout)."""
    conv = Conversation.objects.create(
        widget=widget, channel=channel, session_id=f"s{next(SESSIONS)}", is_preview=preview, visitor_id="v"
    )
    for i, outcome in enumerate(outcomes):
        m = Message.objects.create(
            conversation=conv,
            role=Message.Role.USER,
            text="hi",
            failure_kind="upstream_timeout" if outcome == "x" else "",
        )
        Message.objects.filter(pk=m.pk).update(created_at=at - timedelta(seconds=len(outcomes) - i))
    return conv


def chatkit_failure(widget, *, at, code="invalid_api_key"):
    return Conversation.objects.create(
        widget=widget,
        channel=Channel.CHATKIT,
        session_id=f"thr{next(SESSIONS)}",
        end_reason=f"failed:{code}",
        failed_at=at,
    )


def test_a_failing_widget_opens_one_incident_and_the_agency_hears_once(widget_a, widget_b, owner, member, scan):
    now = timezone.now()
    turns(widget_a, "ooxoxxoxxx", at=now)  # 6 of 10 failed
    turns(widget_b, "oooooooooo", at=now)

    assert scan(now) == {"opened": 1, "closed": 0, "open": 1}
    incident = Incident.objects.get()
    assert (incident.widget, incident.attempts, incident.failures, incident.failure_kind) == (
        widget_a,
        10,
        6,
        "upstream_timeout",
    )
    assert incident.notified_at is not None and incident.closed_at is None
    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert email.to == [owner.email]  # admins and owners, not the editor
    assert email.subject == f"Bot down: {widget_a.name} ({widget_a.license.client_name})"
    assert "6 of 10 recent messages got no answer (upstream_timeout)" in email.body

    turns(widget_a, "xx", at=now + timedelta(seconds=30))
    assert scan(now + timedelta(minutes=1)) == {"opened": 0, "closed": 0, "open": 1}
    assert Incident.objects.count() == 1 and len(mail.outbox) == 1  # once per incident


def test_the_alert_mail_wears_the_agencys_brand(widget_a, owner, scan, settings):
    """A white-labelled agency's admins get the alert from their own brand (From name, Reply-To, the name in
    the text), as its invitation and reset mails: the word “Switchboard” never reaches them."""
    settings.DEFAULT_FROM_EMAIL = "Switchboard <alerts@platform.example>"
    membership = owner.memberships.get()
    branding.brand_update(
        actor=membership, agency=membership.agency, name="Acme Chat", support_email="help@acme.example"
    )
    now = timezone.now()
    turns(widget_a, "xxx", at=now)
    assert scan(now)["opened"] == 1
    email = mail.outbox[0]
    assert email.from_email == "Acme Chat <alerts@platform.example>" and email.reply_to == ["help@acme.example"]
    assert "Test connection) in Acme Chat." in email.body and "Switchboard" not in email.body + email.subject


def test_few_failures_or_a_healthy_rate_open_nothing(widget_a, scan):
    now = timezone.now()
    turns(widget_a, "xoxo", at=now)  # 50%, but only 4 messages, and not the last 3 in a row
    turns(widget_a, "x", at=now - timedelta(minutes=20))  # outside the window
    assert scan(now)["opened"] == 0
    turns(widget_a, "oooooo", at=now + timedelta(seconds=10))  # 2 of 10
    assert scan(now + timedelta(seconds=20))["opened"] == 0
    assert not Incident.objects.exists() and not mail.outbox


def test_an_upstream_that_stopped_answering_is_down_whatever_the_traffic(widget_a, scan, settings):
    now = timezone.now()
    turns(widget_a, "ox", at=now - timedelta(seconds=60))
    turns(widget_a, "xx", at=now)  # the last 3 attempts failed; only 4 in the window
    assert scan(now)["opened"] == 1


def test_previews_and_voice_do_not_count(widget_a, scan):
    now = timezone.now()
    turns(widget_a, "xxxxxx", at=now, preview=True)
    turns(widget_a, "oooooo", at=now, channel=Channel.VOICE)
    assert scan(now)["opened"] == 0


def test_chatkit_failures_count(widget_a, scan):
    now = timezone.now()
    for i in range(3):
        chatkit_failure(widget_a, at=now - timedelta(seconds=i))
    assert scan(now)["opened"] == 1
    assert Incident.objects.get().failure_kind == "invalid_api_key"


def test_it_recovers_once_when_it_answers_again_and_never_on_silence(widget_a, owner, scan):
    now = timezone.now()
    turns(widget_a, "xxxxx", at=now)
    scan(now)
    later = now + timedelta(minutes=30)
    assert scan(later) == {"opened": 0, "closed": 0, "open": 1}  # no traffic proves nothing

    turns(widget_a, "o", at=later)
    assert scan(later + timedelta(seconds=5)) == {"opened": 0, "closed": 1, "open": 0}
    incident = Incident.objects.get()
    assert incident.closed_at is not None and incident.recovered_notified_at is not None
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["Bot down", "Recovered"]
    assert scan(later + timedelta(seconds=10))["closed"] == 0 and len(mail.outbox) == 2


def test_still_down_while_failures_dominate_the_window(widget_a, scan):
    now = timezone.now()
    turns(widget_a, "xxxxxx", at=now)
    scan(now)
    turns(widget_a, "o", at=now + timedelta(seconds=5))  # 6 of 7 failed: still down
    assert scan(now + timedelta(seconds=10))["closed"] == 0


def test_the_webhook_gets_signed_alerts(widget_a, agency_a, owner, scan, fake_http):
    hook = fake_http([(200, {"ok": True})] * 2)
    health.agency_alert_webhook_set(
        actor=owner.memberships.get(), agency=agency_a, url=hook.url + "/alerts", secret="whsec-alerts"
    )
    now = timezone.now()
    turns(widget_a, "xxxxx", at=now)
    scan(now)
    turns(widget_a, "o", at=now + timedelta(minutes=20))
    scan(now + timedelta(minutes=20, seconds=1))
    assert len(hook.requests) == 2
    incident = Incident.objects.get()
    for request, event in zip(hook.requests, ("down", "recovered"), strict=True):
        expected = "sha256=" + hmac.new(b"whsec-alerts", request["body"], hashlib.sha256).hexdigest()
        assert request["headers"]["x-switchboard-signature"] == expected
        assert request["headers"]["idempotency-key"] == f"incident-{incident.pk}-{event}"
        body = json.loads(request["body"])
        assert body["event"] == f"widget.{event}"
        assert body["widget"] == {"id": widget_a.public_id, "name": widget_a.name}
        assert (body["attempts"], body["failures"]) == (5, 5)


def test_a_transient_webhook_failure_is_retried(widget_a, agency_a, owner, scan, fake_http):
    hook = fake_http([(503, {}), (200, {"ok": True})])
    health.agency_alert_webhook_set(actor=owner.memberships.get(), agency=agency_a, url=hook.url + "/a")
    now = timezone.now()
    turns(widget_a, "xxxxx", at=now)
    scan(now)
    assert len(hook.requests) == 2  # retried (eager: inline), same idempotency key
    assert len({r["headers"]["idempotency-key"] for r in hook.requests}) == 1
    assert len(mail.outbox) == 1  # the email is not sent again by the webhook's retry


def test_alert_webhook_settings(agency_a, owner, member, outsider, settings):
    admin = owner.memberships.get()
    for user in (member, outsider):
        with pytest.raises(ApiError) as refused:
            health.agency_alert_webhook_set(actor=user.memberships.get(), agency=agency_a, url="https://a.example")
        assert refused.value.status_code == 403
    settings.N8N_ALLOW_PRIVATE_NETWORKS = False
    for url, words in (
        ("http://hooks.example.com/x", "https://"),
        ("https://127.0.0.1/x", "private network"),
        ("https://10.1.2.3/x", "private network"),
        ("ftp://x", "https://"),
    ):
        with pytest.raises(ApiError) as invalid:
            health.agency_alert_webhook_set(actor=admin, agency=agency_a, url=url)
        assert words in invalid.value.fields["alert_webhook_url"][0]
    health.agency_alert_webhook_set(actor=admin, agency=agency_a, url="https://93.184.216.34/h", secret="s1")
    assert health.alert_secret(agency_a) == "s1"
    health.agency_alert_webhook_set(actor=admin, agency=agency_a, url="https://93.184.216.34/other")
    agency_a.refresh_from_db()
    assert agency_a.alert_webhook_url == "https://93.184.216.34/other"
    assert health.alert_secret(agency_a) == ""  # a secret never signs for an address it was not given for


def test_alerts_page_and_the_widget_list_badge(client, widget_a, widget_b, owner, viewer, outsider, scan):
    now = timezone.now()
    turns(widget_a, "xxxxx", at=now)
    turns(widget_b, "xxxxx", at=now)
    scan(now)
    assert client.get(reverse("app-alerts")).status_code == 302
    client.force_login(viewer)
    page = client.get(reverse("app-alerts")).content.decode()
    assert page.count('data-open="yes"') == 1 and widget_a.name in page and widget_b.name not in page
    assert 'id="id_alert_webhook_url" name="alert_webhook_url" type="url" value="" placeholder' in page
    assert "disabled" in page.split('id="id_alert_webhook_url"')[1].split(">")[0]
    assert client.post(reverse("app-alerts"), {"alert_webhook_url": "https://a.example"}).status_code == 403
    listing = client.get(reverse("app-home")).content.decode()
    assert listing.count('data-health="down"') == 1

    client.force_login(outsider)
    page = client.get(reverse("app-alerts")).content.decode()
    assert widget_a.name not in page and widget_b.name in page

    client.force_login(owner)
    response = client.post(reverse("app-alerts"), {"alert_webhook_url": "not a url"})
    assert response.status_code == 400
    Incident.objects.update(closed_at=now)
    assert 'data-health="down"' not in client.get(reverse("app-home")).content.decode()
