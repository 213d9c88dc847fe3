"""Lead delivery to the agency's CRM webhook: signed, retried on transient failures, never twice."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from licenses.services import agency_crm_webhook_set
from widgets.models import Lead
from widgets.services.leads import lead_create
from widgets.tasks import lead_deliver


@pytest.fixture(autouse=True)
def _retries_run_inline():
    """Eager Celery re-raises Retry when eager_propagates is on; off, apply() runs the retries inline
    (countdown ignored), which is what a worker would do over time."""
    from config.celery import app

    app.conf.task_eager_propagates = False
    yield
    app.conf.task_eager_propagates = True


@pytest.fixture
def crm(agency_a, fake_http):
    fake = fake_http([(200, {"ok": True})])
    agency_crm_webhook_set(agency=agency_a, url=fake.url + "/hooks/leads", secret="whsec-test")
    return fake


def make_lead(widget, capture):
    with capture(execute=True):
        return lead_create(
            widget=widget,
            source="voice",
            name="Ann Lee",
            email="ann@example.com",
            phone="+1 555",
            interest="Phone X",
            data={"device": "iPhone 12"},
        )


@pytest.mark.django_db
def test_lead_is_posted_signed(widget_a, crm, django_capture_on_commit_callbacks):
    lead = make_lead(widget_a, django_capture_on_commit_callbacks)
    assert len(crm.requests) == 1
    request = crm.requests[0]
    expected = "sha256=" + hmac.new(b"whsec-test", request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["x-switchboard-signature"] == expected
    assert request["headers"]["idempotency-key"] == f"lead-{lead.pk}"
    body = json.loads(request["body"])
    assert body["sent_at"] == int(request["headers"]["x-switchboard-timestamp"])
    assert (body["name"], body["email"], body["widget"]["public_id"]) == (
        "Ann Lee",
        "ann@example.com",
        widget_a.public_id,
    )
    lead.refresh_from_db()
    assert lead.delivery_status == Lead.Delivery.DELIVERED and lead.delivery_attempts == 1
    assert lead.delivered_at is not None


@pytest.mark.django_db
def test_nothing_leaves_before_commit(widget_a, crm, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        lead_create(widget=widget_a, source="voice", name="A", email="a@example.com")
    assert not crm.requests and len(callbacks) == 1


@pytest.mark.django_db
def test_500_then_200_is_retried(widget_a, crm, django_capture_on_commit_callbacks):
    crm.responses = [(500, {}), (200, {})]
    lead = make_lead(widget_a, django_capture_on_commit_callbacks)
    assert len(crm.requests) == 2
    lead.refresh_from_db()
    assert lead.delivery_status == Lead.Delivery.DELIVERED and lead.delivery_attempts == 2


@pytest.mark.django_db
def test_connect_error_is_retried_then_fails(widget_a, agency_a, django_capture_on_commit_callbacks):
    agency_a.crm_webhook_url = "http://127.0.0.1:9/unreachable"  # discard port: connection refused
    agency_a.save()
    lead = make_lead(widget_a, django_capture_on_commit_callbacks)
    lead.refresh_from_db()
    assert lead.delivery_status == Lead.Delivery.FAILED and lead.delivery_attempts == 6
    assert lead.last_error


@pytest.mark.django_db
def test_4xx_is_not_retried(widget_a, crm, django_capture_on_commit_callbacks):
    crm.responses = [(400, {"error": "bad"})]
    lead = make_lead(widget_a, django_capture_on_commit_callbacks)
    lead.refresh_from_db()
    assert len(crm.requests) == 1 and lead.delivery_status == Lead.Delivery.FAILED


@pytest.mark.django_db
def test_a_crm_error_page_with_a_nul_byte_is_recorded_mended(widget_a, crm, django_capture_on_commit_callbacks):
    """The CRM's words go into last_error: a NUL in them (PostgreSQL refuses it) must not leave the lead
    `sending` for the reaper to send again and again."""
    crm.responses = [(422, b"bad lead\x00 \xff")]
    lead = make_lead(widget_a, django_capture_on_commit_callbacks)
    lead.refresh_from_db()
    assert len(crm.requests) == 1 and lead.delivery_status == Lead.Delivery.FAILED
    assert lead.last_error == "HTTP 422: bad lead\ufffd \ufffd"


@pytest.mark.django_db
def test_running_the_task_twice_delivers_once(widget_a, crm, django_capture_on_commit_callbacks):
    lead = make_lead(widget_a, django_capture_on_commit_callbacks)
    assert lead_deliver.apply(args=[lead.pk]).get() == "not_pending"
    assert len(crm.requests) == 1


@pytest.mark.django_db
def test_deleted_lead_is_a_quiet_no_op(widget_a, crm):
    assert lead_deliver.apply(args=[987654]).get() == "gone"


# --- issue 9 finding 1: the signing secret signs only for the URL it was saved with ---------------


@pytest.mark.django_db
def test_a_new_crm_url_without_the_secret_clears_it(
    widget_a, agency_a, crm, fake_http, django_capture_on_commit_callbacks
):
    other = fake_http([(200, {"ok": True})])
    agency_crm_webhook_set(agency=agency_a, url=other.url + "/attacker", secret=None)
    agency_a.refresh_from_db()
    assert "crm_webhook_secret" not in agency_a.secrets
    make_lead(widget_a, django_capture_on_commit_callbacks)
    assert len(other.requests) == 1 and "x-switchboard-signature" not in other.requests[0]["headers"]


@pytest.mark.django_db
def test_a_url_changed_behind_the_service_is_never_signed_for(
    widget_a, agency_a, crm, fake_http, django_capture_on_commit_callbacks
):
    other = fake_http([(200, {"ok": True})])
    type(agency_a).objects.filter(pk=agency_a.pk).update(crm_webhook_url=other.url + "/elsewhere")
    make_lead(widget_a, django_capture_on_commit_callbacks)
    assert len(other.requests) == 1 and other.requests[0]["body"]  # the lead was delivered there ...
    assert "x-switchboard-signature" not in other.requests[0]["headers"]  # ... unsigned


@pytest.mark.django_db
def test_re_entering_the_secret_with_the_new_url_signs_there(agency_a, crm):
    agency_crm_webhook_set(agency=agency_a, url="https://crm.example.com/new", secret="whsec-new")
    agency_a.refresh_from_db()
    assert agency_a.secrets == {
        "crm_webhook_secret": "whsec-new",
        "crm_webhook_secret_url": "https://crm.example.com/new",
    }
    agency_crm_webhook_set(agency=agency_a, url="https://crm.example.com/new", secret=None)  # same URL: kept
    agency_a.refresh_from_db()
    assert agency_a.secrets["crm_webhook_secret"] == "whsec-new"


@pytest.mark.django_db
def test_staff_admin_url_change_without_secret_clears_it(client, staff, agency_a, crm):
    client.force_login(staff)
    url = f"/admin/licenses/agency/{agency_a.pk}/change/"
    page = client.get(url)
    assert "whsec-test" not in page.content.decode()  # write-only
    data = {
        "name": agency_a.name,
        "slug": agency_a.slug,
        "crm_webhook_url": "https://attacker.example/hook",
        "crm_webhook_secret": "",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    agency_a.refresh_from_db()
    assert agency_a.crm_webhook_url == "https://attacker.example/hook"
    assert "crm_webhook_secret" not in agency_a.secrets
    response = client.post(url, {**data, "crm_webhook_secret": "whsec-2"})
    agency_a.refresh_from_db()
    assert agency_a.secrets["crm_webhook_secret"] == "whsec-2"
    assert agency_a.secrets["crm_webhook_secret_url"] == "https://attacker.example/hook"
