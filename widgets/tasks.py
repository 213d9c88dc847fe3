"""Celery tasks of the widgets app. Tasks take ids, re-read the row and return quietly if it is gone.

Lead delivery is at-least-once towards the CRM and exactly-once in effect: every POST of one lead
carries the same `Idempotency-Key: lead-<id>`, so a receiver that honours it (as our webhook contract
asks) processes a lead once even when a worker died after the POST but before recording it, and the
reaper (`leads_reap`) sent it again."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta

import httpx
from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.core.mail import EmailMessage
from django.db import InterfaceError, OperationalError, connection
from django.db.models import F, Q
from django.utils import timezone

from licenses.api import storable
from licenses.branding import brand_for_agency, brand_mail_headers
from licenses.selectors import agency_alert_emails
from licenses.services import CRM_SECRET, CRM_SECRET_BINDING
from widgets import analytics, health, privacy
from widgets.models import Incident, Lead
from widgets.n8n import n8n_target_allowed

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Switchboard-Signature"
TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
LEAD_MAX_RETRIES = 5
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
LEADS_REAP_LAST_RUN_KEY = "switchboard:reaper:leads:last-run"  # read by `python -m config.health beat`


class TransientDeliveryError(Exception):
    """A failure worth retrying: connect error, timeout, 5xx, 429."""


def lead_payload(lead: Lead, *, sent_at: int) -> dict:
    widget = lead.widget
    return {
        "event": "lead.created",
        "id": lead.pk,
        "sent_at": sent_at,
        "created_at": lead.created_at.isoformat(),
        "source": lead.source,
        "name": lead.name,
        "email": lead.email,
        "phone": lead.phone,
        "interest": lead.interest,
        "data": lead.data,
        "widget": {"public_id": widget.public_id, "name": widget.name},
        "license": {"client_name": widget.license.client_name},
        "conversation_id": lead.conversation_id,
    }


def lead_signature(*, secret: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the raw request body with the agency's crm_webhook_secret.

    The body carries `sent_at` (also sent as X-Switchboard-Timestamp), so the timestamp is signed too.
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_countdown(attempts: int) -> int:
    """Seconds before the next try after `attempts` failed ones: 2, 4, 8, 16, 32 (capped at 300)."""
    return min(2**attempts, 300)


def _post(url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=httpx.Timeout(10.0, connect=5.0))
    except httpx.TransportError as exc:  # connect errors, timeouts, dropped connections
        raise TransientDeliveryError(f"{type(exc).__name__}: {exc}"[:500])
    if response.status_code in TRANSIENT_STATUSES or response.status_code >= 500:
        raise TransientDeliveryError(f"HTTP {response.status_code}")
    if response.status_code >= 300:  # the CRM's own words, stored in last_error: mended (licenses.api.storable)
        raise ValueError(f"HTTP {response.status_code}: {storable(response.text[:200])}")


# A database blip before the claim (the first query on a connection the server ended) is retried soon
# instead of waiting for the reaper; after the claim the outcome write retries itself (_after_post_update).
@shared_task(
    bind=True,
    max_retries=LEAD_MAX_RETRIES,
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=1,
    retry_backoff_max=30,
)
def lead_deliver(self, lead_id: int) -> str:
    """POST one lead to its agency's CRM webhook, signed; at most one successful delivery."""
    lead = Lead.objects.select_related("widget__license__agency").filter(pk=lead_id).first()
    if lead is None:
        return "gone"
    agency = lead.widget.license.agency
    if not agency.crm_webhook_url:
        Lead.objects.filter(pk=lead_id, delivery_status=Lead.Delivery.PENDING).update(
            delivery_status=Lead.Delivery.SKIPPED
        )
        return "skipped"
    # Claim: only one worker moves pending -> sending; a second run (duplicate message) stops here.
    claimed = Lead.objects.filter(pk=lead_id, delivery_status=Lead.Delivery.PENDING).update(
        delivery_status=Lead.Delivery.SENDING, delivery_attempts=F("delivery_attempts") + 1, claimed_at=timezone.now()
    )
    if not claimed:
        return "not_pending"
    attempts = lead.delivery_attempts + 1  # the claim is exclusive, so the row read above is one behind
    sent_at = int(time.time())
    body = json.dumps(lead_payload(lead, sent_at=sent_at), separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Switchboard-Webhooks/1",
        TIMESTAMP_HEADER: str(sent_at),
        IDEMPOTENCY_HEADER: f"lead-{lead.pk}",
    }
    secrets = agency.secrets or {}
    secret = secrets.get(CRM_SECRET, "")
    # The secret signs only for the exact URL it was saved with (licenses.services.agency_crm_webhook_set).
    if secret and secrets.get(CRM_SECRET_BINDING) == agency.crm_webhook_url:
        headers[SIGNATURE_HEADER] = lead_signature(secret=secret, body=body)
    try:
        _post(agency.crm_webhook_url, body, headers)
    except TransientDeliveryError as exc:
        # Counted in the row, not in the task: a lead the reaper re-enqueued keeps its attempts.
        final = attempts > LEAD_MAX_RETRIES
        _after_post_update(
            lead_id, delivery_status=Lead.Delivery.FAILED if final else Lead.Delivery.PENDING, last_error=str(exc)[:500]
        )
        if final:
            logger.warning("lead %s delivery failed for good: %s", lead_id, exc)
            return "failed"
        raise self.retry(exc=exc, countdown=retry_countdown(attempts))
    except Exception as exc:
        _after_post_update(lead_id, delivery_status=Lead.Delivery.FAILED, last_error=str(exc)[:500])
        logger.warning("lead %s refused by the CRM: %s", lead_id, exc)
        return "failed"
    _after_post_update(lead_id, delivery_status=Lead.Delivery.DELIVERED, delivered_at=timezone.now(), last_error="")
    return "delivered"


def _after_post_update(lead_id: int, **fields: object) -> None:
    """Record the outcome of a POST that has happened: one dropped database connection (a failover, a
    terminated backend) is retried on a new connection rather than leaving the lead `sending` until the
    reaper sends it again. A pool may hold several connections the database ended: a few tries."""
    for attempt in range(1, 4):
        try:
            Lead.objects.filter(pk=lead_id, delivery_status=Lead.Delivery.SENDING).update(**fields)
            return
        except (OperationalError, InterfaceError):
            if attempt == 3:
                raise
            connection.close()
            time.sleep(0.2 * attempt)


def sending_stale_seconds() -> int:
    """A lead still `sending` after the task's hard time limit (plus a margin for clock skew between the
    worker's and beat's machines) lost its worker: the pool kills a task at its hard limit."""
    return int(settings.CELERY_TASK_TIME_LIMIT) + 15


@shared_task(ignore_result=True)
def leads_reap() -> dict[str, int]:
    """Beat task (config/celery.py): deliver what a dead worker or a broker outage left behind.

    - `sending` leads claimed longer ago than the task time limit go back to `pending` (their worker was
      killed mid-delivery; the broker would redeliver only after its 1 h visibility timeout, and then skip
      them as not pending);
    - `pending` leads nobody is working on are enqueued again: new ones older than
      LEAD_PENDING_STALE_SECONDS (the broker was down when they were saved, or their message was lost) and
      retried ones whose back-off has long passed.
    A duplicate message is harmless: the conditional claim lets one worker through, and the CRM sees the
    same Idempotency-Key."""
    now = timezone.now()
    returned = Lead.objects.filter(
        Q(claimed_at__lt=now - timedelta(seconds=sending_stale_seconds())) | Q(claimed_at__isnull=True),
        delivery_status=Lead.Delivery.SENDING,
    ).update(delivery_status=Lead.Delivery.PENDING, last_error="worker lost mid-delivery")
    quiet = now - timedelta(seconds=settings.LEAD_PENDING_STALE_SECONDS)
    backoff_over = now - timedelta(seconds=retry_countdown(LEAD_MAX_RETRIES) + settings.LEAD_PENDING_STALE_SECONDS)
    stuck = list(
        Lead.objects.filter(delivery_status=Lead.Delivery.PENDING, created_at__lt=quiet)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=backoff_over))
        .order_by("created_at")
        .values_list("pk", flat=True)[:500]
    )
    for lead_id in stuck:
        lead_deliver.delay(lead_id)
    cache.set(LEADS_REAP_LAST_RUN_KEY, time.time(), timeout=None)
    if returned or stuck:
        logger.warning("lead reaper: %s lead(s) back from sending, %s re-enqueued", returned, len(stuck))
    return {"returned": returned, "enqueued": len(stuck)}


@shared_task(ignore_result=True)
def retention_apply() -> dict[str, dict[str, int]]:
    """Beat task (config/celery.py, nightly): each agency's retention window (widgets/privacy.py)."""
    return privacy.retention_apply()


# --- bot health (widgets/health.py) ---------------------------------------------------------------


@shared_task(ignore_result=True)
def health_check() -> dict[str, int]:
    """Beat task (config/celery.py, every HEALTH_CHECK_SECONDS): open and close bot-down incidents."""
    return health.health_scan()


def incident_payload(incident: Incident, event: str) -> dict:
    widget = incident.widget
    return {
        "event": f"widget.{event}",
        "incident": incident.pk,
        "widget": {"id": widget.public_id, "name": widget.name},
        "client": widget.license.client_name,
        "opened_at": incident.opened_at.isoformat(),
        "closed_at": incident.closed_at.isoformat() if incident.closed_at else None,
        "attempts": incident.attempts,
        "failures": incident.failures,
        "failure_kind": incident.failure_kind,
    }


@shared_task(ignore_result=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=1, max_retries=5)
def incident_notify(incident_id: int, event: str) -> str:
    """Tell the agency once per incident and event ("down", "recovered"): an email to its admins and
    owners now, the signed webhook through `incident_webhook` (with its own retries)."""
    field = "notified_at" if event == "down" else "recovered_notified_at"
    claimed = Incident.objects.filter(pk=incident_id, **{f"{field}__isnull": True}).update(**{field: timezone.now()})
    if not claimed:
        return "already"
    incident = Incident.objects.select_related("widget__license__agency").get(pk=incident_id)
    widget, agency = incident.widget, incident.widget.license.agency
    recipients = agency_alert_emails(agency=agency)
    brand = brand_for_agency(agency=agency.pk)  # the agency's own name and sender, as its other mails (15.5)
    if event == "down":
        subject = f"Bot down: {widget.name} ({widget.license.client_name})"
        body = (
            f"{widget.name} for {widget.license.client_name} stopped answering visitors at "
            f"{incident.opened_at:%Y-%m-%d %H:%M} UTC: {incident.failures} of {incident.attempts} recent messages "
            f"got no answer ({incident.failure_kind or 'upstream error'}).\n\n"
            f"Check the widget's connection (Connection > Test connection) in {brand.name}. You will get one more "
            "message when it answers again."
        )
    else:
        subject = f"Recovered: {widget.name} ({widget.license.client_name})"
        body = (
            f"{widget.name} for {widget.license.client_name} answers visitors again "
            f"(down from {incident.opened_at:%Y-%m-%d %H:%M} to {incident.closed_at:%H:%M} UTC)."
        )
    if recipients:
        EmailMessage(subject, body, to=recipients, **brand_mail_headers(brand)).send(fail_silently=True)
    if agency.alert_webhook_url:
        incident_webhook.delay(incident_id, event)
    return "sent"


@shared_task(bind=True, ignore_result=True, max_retries=LEAD_MAX_RETRIES)
def incident_webhook(self, incident_id: int, event: str) -> str:
    """POST the alert to the agency's alert webhook, signed like leads (X-Switchboard-Signature over the
    body with the alert secret), `Idempotency-Key: incident-<id>-<event>`; transient failures retry."""
    incident = Incident.objects.select_related("widget__license__agency").filter(pk=incident_id).first()
    if incident is None:
        return "gone"
    agency = incident.widget.license.agency
    url = agency.alert_webhook_url
    if not url:
        return "skipped"
    if not n8n_target_allowed(url):  # checked again at send time: DNS may have changed since it was saved
        logger.warning("alert webhook of agency %s refused: it resolves to a non-public address", agency.pk)
        return "refused"
    sent_at = int(time.time())
    body = json.dumps(incident_payload(incident, event), separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Switchboard-Webhooks/1",
        TIMESTAMP_HEADER: str(sent_at),
        IDEMPOTENCY_HEADER: f"incident-{incident_id}-{event}",
    }
    secret = health.alert_secret(agency)
    if secret:
        headers[SIGNATURE_HEADER] = lead_signature(secret=secret, body=body)
    try:
        _post(url, body, headers)
    except TransientDeliveryError as exc:
        if self.request.retries >= LEAD_MAX_RETRIES:
            logger.warning("alert webhook for incident %s failed for good: %s", incident_id, exc)
            return "failed"
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries + 1))
    except Exception as exc:
        logger.warning("alert webhook for incident %s refused: %s", incident_id, exc)
        return "failed"
    return "delivered"


@shared_task(ignore_result=True)
def analytics_rollup() -> dict[str, int]:
    """Beat task (config/celery.py, every ANALYTICS_ROLLUP_SECONDS): today's and yesterday's rollup."""
    return analytics.rollup_recent()
