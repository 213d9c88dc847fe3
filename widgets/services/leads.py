"""Leads from the public widget (trade-in form, contact forms).

`lead_create` is the one entry point for every channel (voice tool, trade-in form, chat); it
enqueues CRM delivery (widgets.tasks.lead_deliver) once the transaction commits.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from licenses.api import ApiError
from licenses.models import Membership
from licenses.tenancy import role_require
from widgets.models import Conversation, Lead, Widget

logger = logging.getLogger(__name__)

LEAD_SOURCES = ("trade_in_form", "contact_form", "chat", "chatkit", "voice")
MAX_DATA_FIELDS = 20


def _text(data: dict[str, Any], name: str, max_length: int) -> str:
    value = data.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str | int | float):
        raise ApiError("invalid", f"{name} must be text.", fields={name: ["Must be text."]})
    value = str(value).strip()
    if len(value) > max_length:
        raise ApiError("invalid", f"{name}: at most {max_length} characters.", fields={name: ["Too long."]})
    return value


def lead_clean(*, data: dict[str, Any]) -> dict[str, Any]:
    """Validate a lead submitted by a visitor. Raises ApiError with the field to fix."""
    source = _text(data, "source", 32) or "trade_in_form"
    if source not in LEAD_SOURCES:
        raise ApiError("invalid", f"source must be one of {', '.join(LEAD_SOURCES)}.", fields={"source": ["Unknown."]})
    name = _text(data, "name", 200)
    email = _text(data, "email", 254)
    phone = _text(data, "phone", 50)
    interest = _text(data, "interest", 500)
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise ApiError("invalid", "email: enter a valid email address.", fields={"email": ["Invalid email."]})
    if not email and not phone:
        raise ApiError(
            "invalid",
            "Give an email or a phone number so we can reply.",
            fields={"email": ["Email or phone is required."]},
        )
    extra = data.get("data") or {}
    if not isinstance(extra, dict) or len(extra) > MAX_DATA_FIELDS:
        raise ApiError(
            "invalid", f"data must be an object with at most {MAX_DATA_FIELDS} fields.", fields={"data": ["Invalid."]}
        )
    clean_extra = {str(k)[:50]: _text(extra, k, 500) for k in extra}
    return {"source": source, "name": name, "email": email, "phone": phone, "interest": interest, "data": clean_extra}


def lead_create(
    *,
    widget: Widget,
    conversation: Conversation | None = None,
    source: str,
    name: str = "",
    email: str = "",
    phone: str = "",
    interest: str = "",
    data: dict[str, Any] | None = None,
) -> Lead:
    """Save a lead and, once the transaction commits, enqueue its delivery to the agency's CRM webhook."""
    with transaction.atomic():
        lead = Lead.objects.create(
            widget=widget,
            conversation=conversation,
            source=source[:32],
            name=name[:200],
            email=email[:254],
            phone=phone[:50],
            interest=interest[:500],
            data=data or {},
        )
        transaction.on_commit(lambda: lead_enqueue(lead_id=lead.pk))
    return lead


def lead_enqueue(*, lead_id: int) -> bool:
    """Hand the saved lead to the CRM delivery task. A broker outage must not lose or fail the lead
    (issue 11.4): it stays `pending` in PostgreSQL and the beat task `leads_reap` enqueues it again
    once the broker is back. Returns whether the broker took it."""
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from widgets.tasks import lead_deliver

    try:
        # No result to wait for (the lead row is the state): publishing must not touch the result store.
        lead_deliver.apply_async(
            (lead_id,), ignore_result=True, retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2}
        )
    except (BrokerError, RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError) as exc:
        logger.warning(
            "lead %s saved but not enqueued (%s): it stays pending until the broker is back",
            lead_id,
            exc.__class__.__name__,
        )
        return False
    return True


def lead_submit(*, widget: Widget, data: dict[str, Any]) -> Lead:
    """A form posted by the widget: validate, link the chat conversation of `sessionId` if any, store."""
    clean = lead_clean(data=data)
    session_id = data.get("sessionId") if isinstance(data.get("sessionId"), str) else ""
    conversation = None
    if session_id:
        conversation = widget.conversations.filter(session_id=session_id[:200]).order_by("id").first()
    return lead_create(widget=widget, conversation=conversation, **clean)


def lead_retry(*, actor: Membership | None, lead: Lead) -> Lead:
    """The leads page's **Retry delivery** (editors and up): a failed or skipped lead goes back to
    `pending` with a fresh set of attempts and is enqueued once the transaction commits. A delivered lead
    is never sent again, and one being sent is left to its worker (409 both)."""
    if actor is not None and actor.agency_id != lead.widget.license.agency_id:
        actor = None  # a membership of another agency holds no role here
    role_require(actor, Membership.Role.EDITOR, "retry a lead's delivery")
    with transaction.atomic():
        retried = Lead.objects.filter(
            pk=lead.pk, delivery_status__in=[Lead.Delivery.FAILED, Lead.Delivery.SKIPPED, Lead.Delivery.PENDING]
        ).update(delivery_status=Lead.Delivery.PENDING, delivery_attempts=0, claimed_at=None, last_error="")
        if not retried:
            status = Lead.objects.filter(pk=lead.pk).values_list("delivery_status", flat=True).first()
            words = "was already delivered" if status == Lead.Delivery.DELIVERED else "is being sent right now"
            raise ApiError("conflict", f"This lead {words}.", status_code=409)
        transaction.on_commit(lambda: lead_enqueue(lead_id=lead.pk))
    lead.refresh_from_db()
    return lead
