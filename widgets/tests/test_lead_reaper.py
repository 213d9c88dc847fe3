"""Issue 11, findings 6 and 7: the beat reaper delivers what a dead worker or a broker outage left behind —
`sending` leads of a killed worker go back to `pending`, forgotten `pending` leads are enqueued again —
and the CRM still processes each lead once (same Idempotency-Key on every try)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from widgets.models import Lead
from widgets.tasks import LEAD_MAX_RETRIES, lead_deliver, leads_reap
from widgets.tests.factories import WidgetFactory

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _retries_run_inline():
    from config.celery import app

    app.conf.task_eager_propagates = False
    yield
    app.conf.task_eager_propagates = True


@pytest.fixture
def crm(agency_a, fake_http):
    fake = fake_http([(200, {"ok": True})])
    agency_a.crm_webhook_url = fake.url + "/hooks/leads"
    agency_a.save()
    return fake


def lead_in(widget, *, status: str, age: float, claimed: float | None = None, attempts: int = 0) -> Lead:
    """A lead saved `age` seconds ago (no task enqueued), last claimed `claimed` seconds ago."""
    now = timezone.now()
    lead = Lead.objects.create(
        widget=widget,
        source="chat",
        name="Ann",
        email="ann@example.com",
        delivery_status=status,
        delivery_attempts=attempts,
        claimed_at=None if claimed is None else now - timedelta(seconds=claimed),
    )
    Lead.objects.filter(pk=lead.pk).update(created_at=now - timedelta(seconds=age))
    return lead


def status_of(lead: Lead) -> str:
    lead.refresh_from_db()
    return lead.delivery_status


def test_a_lead_left_sending_by_a_killed_worker_is_delivered_once(widget_a, crm, settings):
    lead = lead_in(
        widget_a, status=Lead.Delivery.SENDING, age=600, claimed=settings.CELERY_TASK_TIME_LIMIT + 16, attempts=1
    )
    assert leads_reap.apply().get() == {"returned": 1, "enqueued": 1}
    assert status_of(lead) == Lead.Delivery.DELIVERED and lead.delivery_attempts == 2
    assert [r["headers"]["idempotency-key"] for r in crm.requests] == [f"lead-{lead.pk}"]
    # The broker's own redelivery of the killed worker's message, an hour later, changes nothing.
    assert lead_deliver.apply(args=[lead.pk]).get() == "not_pending"
    assert leads_reap.apply().get() == {"returned": 0, "enqueued": 0}
    assert len(crm.requests) == 1


def test_a_lead_being_sent_right_now_is_left_alone(widget_a, crm, settings):
    lead = lead_in(
        widget_a, status=Lead.Delivery.SENDING, age=600, claimed=settings.CELERY_TASK_TIME_LIMIT - 5, attempts=1
    )
    assert leads_reap.apply().get() == {"returned": 0, "enqueued": 0}
    assert status_of(lead) == Lead.Delivery.SENDING and crm.requests == []


def test_a_pending_lead_nobody_enqueued_is_delivered(widget_a, crm, settings):
    """The broker was down when the lead was saved: it waits in PostgreSQL, then beat enqueues it."""
    old = lead_in(widget_a, status=Lead.Delivery.PENDING, age=settings.LEAD_PENDING_STALE_SECONDS + 5)
    fresh = lead_in(widget_a, status=Lead.Delivery.PENDING, age=1)  # its own task may still be on its way
    assert leads_reap.apply().get() == {"returned": 0, "enqueued": 1}
    assert status_of(old) == Lead.Delivery.DELIVERED and status_of(fresh) == Lead.Delivery.PENDING
    assert [r["headers"]["idempotency-key"] for r in crm.requests] == [f"lead-{old.pk}"]


def test_a_lead_waiting_for_its_retry_is_not_rushed(widget_a, crm):
    waiting = lead_in(widget_a, status=Lead.Delivery.PENDING, age=600, claimed=10, attempts=2)
    assert leads_reap.apply().get() == {"returned": 0, "enqueued": 0}
    assert status_of(waiting) == Lead.Delivery.PENDING and crm.requests == []


def test_attempts_count_across_reenqueues(widget_a, agency_a):
    """A re-enqueued task starts with 0 Celery retries; the row's attempts still end the retries."""
    agency_a.crm_webhook_url = "http://127.0.0.1:9/hooks/leads"  # connection refused
    agency_a.save()
    lead = lead_in(widget_a, status=Lead.Delivery.PENDING, age=600, claimed=600, attempts=LEAD_MAX_RETRIES)
    assert leads_reap.apply().get()["enqueued"] == 1
    lead.refresh_from_db()
    assert lead.delivery_status == Lead.Delivery.FAILED and lead.delivery_attempts == LEAD_MAX_RETRIES + 1


def test_other_statuses_are_never_touched(widget_a, crm):
    for status in (Lead.Delivery.DELIVERED, Lead.Delivery.FAILED, Lead.Delivery.SKIPPED):
        lead_in(widget_a, status=status, age=6000, claimed=6000)
    other = WidgetFactory()
    lead_in(other, status=Lead.Delivery.DELIVERED, age=6000, claimed=6000)
    assert leads_reap.apply().get() == {"returned": 0, "enqueued": 0}
    assert crm.requests == []


def test_beat_runs_both_reapers(settings):
    from config.celery import app

    schedule = app.conf.beat_schedule
    assert schedule["leads-reap"]["task"] == "widgets.tasks.leads_reap"
    assert schedule["voice-calls-reap"]["task"] == "realtime.tasks.voice_calls_reap"
    reapers = {schedule[name]["schedule"] for name in ("leads-reap", "voice-calls-reap")}
    assert reapers == {float(settings.REAPER_INTERVAL_SECONDS)}


@pytest.mark.django_db(transaction=True)
def test_a_dropped_connection_after_the_post_does_not_send_the_lead_again(widget_a, crm):
    """A terminated database backend right after the CRM answered: the outcome is written on a new
    connection, so the lead is not left `sending` for the reaper to POST a second time."""
    from django.db import OperationalError, connection

    lead = lead_in(widget_a, status=Lead.Delivery.PENDING, age=1)
    dropped = []

    def drop_once(execute, sql, params, many, context):
        if sql.startswith("UPDATE") and "delivered" in map(str, params or ()) and not dropped:
            dropped.append(sql)
            raise OperationalError("terminating connection due to administrator command")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(drop_once):
        assert lead_deliver.apply(args=[lead.pk]).get() == "delivered"
    assert dropped and status_of(lead) == Lead.Delivery.DELIVERED
    assert leads_reap.apply().get() == {"returned": 0, "enqueued": 0}
    assert len(crm.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_a_dropped_connection_before_the_claim_is_retried_at_once(widget_a, crm):
    from django.db import OperationalError, connection

    lead = lead_in(widget_a, status=Lead.Delivery.PENDING, age=1)
    dropped = []

    def drop_first_select(execute, sql, params, many, context):
        if sql.startswith("SELECT") and not dropped:
            dropped.append(sql)
            raise OperationalError("terminating connection due to administrator command")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(drop_first_select):
        assert lead_deliver.apply(args=[lead.pk]).get() == "delivered"
    assert dropped and status_of(lead) == Lead.Delivery.DELIVERED and len(crm.requests) == 1
