"""Retention and visitor privacy (issue 13.6): what an agency keeps, and a visitor's data on request.

- `retention_apply()` (Celery beat, nightly): for every agency with `retention_days`, deletes its
  conversations (with their messages, ChatKit threads and items) whose last activity is older than the
  window, and its leads created before it. A conversation with a message or a heartbeat inside the window
  is still in use and stays. Deleted in batches of `BATCH` rows, one short transaction each, so a large
  purge never holds long locks. Every run writes one audit line per agency with the counts.
- `visitor_find` / `visitor_export` / `visitor_erase`: a visitor's conversations and leads across the
  agency's clients, found by visitor id (as the inbox shows it) and/or email (the leads that carry it,
  and every conversation of the visitors behind those leads). Export is a JSON document; erase deletes
  them in one transaction. Admins and owners only; both audited (counts, never message text).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from licenses.api import ApiError
from licenses.models import Agency, AuditEvent, Membership
from licenses.services import audit_record
from licenses.tenancy import role_require
from widgets.models import Conversation, Lead, Message

BATCH = 1000


def _deleted(counts: dict[str, int], result: tuple[int, dict[str, int]]) -> None:
    """Add a `delete()`'s rows to `counts` (conversation, message, lead; ChatKit rows go with them)."""
    for label, n in result[1].items():
        name = label.rsplit(".", 1)[-1].lower()
        if name in counts:
            counts[name] += n


def retention_expired(*, agency: Agency, now: datetime) -> tuple[QuerySet[Conversation], QuerySet[Lead]]:
    """The agency's conversations and leads past its retention window (nothing when it keeps all)."""
    if agency.retention_days is None:
        return Conversation.objects.none(), Lead.objects.none()
    cutoff = now - timedelta(days=agency.retention_days)
    recent = Message.objects.filter(conversation=OuterRef("pk"), created_at__gte=cutoff)
    conversations = (
        Conversation.objects.filter(widget__license__agency=agency, started_at__lt=cutoff)
        .exclude(Exists(recent))
        .exclude(heartbeat_at__gte=cutoff)
    )
    leads = Lead.objects.filter(widget__license__agency=agency, created_at__lt=cutoff)
    return conversations, leads


def retention_apply_agency(*, agency: Agency, now: datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    conversations, leads = retention_expired(agency=agency, now=now)
    counts: dict[str, int] = {"conversation": 0, "message": 0, "lead": 0}
    for queryset, model in ((leads, Lead), (conversations, Conversation)):
        while True:
            ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:BATCH])
            if not ids:
                break
            with transaction.atomic():
                _deleted(counts, model.objects.filter(pk__in=ids).delete())
    return counts


def retention_apply(*, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Beat task body: every agency with a retention window; one audit line each (proof it ran)."""
    now = now or timezone.now()
    done: dict[str, dict[str, int]] = {}
    for agency in Agency.objects.filter(retention_days__isnull=False).order_by("pk"):
        counts = retention_apply_agency(agency=agency, now=now)
        audit_record(
            agency=agency,
            actor=None,
            action=AuditEvent.Action.RETENTION_APPLIED,
            details={"days": agency.retention_days, **counts},
        )
        done[agency.slug] = counts
    return done


# --- a visitor's data ---------------------------------------------------------------------------


@dataclass
class VisitorData:
    visitor_id: str
    email: str
    conversations: QuerySet[Conversation]
    leads: QuerySet[Lead]

    @property
    def target(self) -> str:
        """For the audit log: the visitor id, and the email masked (the log outlives an erasure)."""
        parts = [f"visitor {self.visitor_id}"] if self.visitor_id else []
        if self.email:
            local, _, domain = self.email.partition("@")
            parts.append(f"email {local[:1]}***@{domain}")
        return ", ".join(parts)

    def counts(self) -> dict[str, int]:
        return {
            "conversations": self.conversations.count(),
            "messages": Message.objects.filter(conversation__in=self.conversations).count(),
            "leads": self.leads.count(),
        }


def _privacy_gate(actor: Membership | None, agency: Agency, action: str) -> None:
    if actor is not None and actor.agency_id != agency.pk:
        actor = None  # a membership of another agency holds no role here
    role_require(actor, Membership.Role.ADMIN, action)


def visitor_find(*, actor: Membership | None, agency: Agency, visitor_id: str = "", email: str = "") -> VisitorData:
    """The visitor's conversations and leads in this agency. At least one of visitor id and email."""
    _privacy_gate(actor, agency, "look up a visitor's data")
    visitor_id, email = (visitor_id or "").strip()[:128], (email or "").strip()[:254]
    if not visitor_id and not email:
        raise ApiError("invalid", "Enter a visitor id or an email address.", fields={"visitor_id": ["Required."]})
    if email and "@" not in email:
        raise ApiError("invalid", "Enter a valid email address.", fields={"email": ["Enter a valid email address."]})
    scope = Q(widget__license__agency=agency)
    visitors = {visitor_id} if visitor_id else set()
    if email:
        visitors |= set(
            Conversation.objects.filter(scope, leads__email__iexact=email).values_list("visitor_id", flat=True)
        )
    visitors.discard("")  # conversations without a visitor id belong to nobody in particular
    conversations = Conversation.objects.filter(scope, visitor_id__in=visitors)
    lead_match = Q(conversation__in=conversations)
    if email:
        lead_match |= Q(email__iexact=email)
    leads = Lead.objects.filter(scope).filter(lead_match)
    return VisitorData(visitor_id=visitor_id, email=email, conversations=conversations, leads=leads)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def visitor_export(*, actor: Membership, agency: Agency, visitor_id: str = "", email: str = "") -> dict[str, Any]:
    """Everything the agency holds on the visitor, as one JSON-ready document; audited."""
    found = visitor_find(actor=actor, agency=agency, visitor_id=visitor_id, email=email)
    conversations = list(
        found.conversations.select_related("widget__license").order_by("started_at", "pk").prefetch_related("messages")
    )
    document = {
        "agency": agency.name,
        "generated_at": timezone.now().isoformat(),
        "request": {"visitor_id": found.visitor_id, "email": found.email},
        "conversations": [
            {
                "id": c.pk,
                "client": c.widget.license.client_name,
                "widget": c.widget.name,
                "channel": c.channel,
                "visitor_id": c.visitor_id,
                "started_at": _iso(c.started_at),
                "ended_at": _iso(c.ended_at),
                "messages": [
                    {"role": m.role, "text": m.text, "ui": m.payload, "created_at": _iso(m.created_at)}
                    for m in sorted(c.messages.all(), key=lambda m: (m.created_at, m.pk))
                ],
            }
            for c in conversations
        ],
        "leads": [
            {
                "id": lead.pk,
                "source": lead.source,
                "name": lead.name,
                "email": lead.email,
                "phone": lead.phone,
                "interest": lead.interest,
                "data": lead.data,
                "created_at": _iso(lead.created_at),
                "conversation": lead.conversation_id,
            }
            for lead in found.leads.order_by("created_at", "pk")
        ],
    }
    audit_record(
        agency=agency,
        actor=actor.user,
        action=AuditEvent.Action.VISITOR_EXPORTED,
        target=found.target,
        details={
            "conversations": len(document["conversations"]),
            "messages": sum(len(c["messages"]) for c in document["conversations"]),
            "leads": len(document["leads"]),
        },
    )
    return document


def visitor_erase(*, actor: Membership, agency: Agency, visitor_id: str = "", email: str = "") -> dict[str, int]:
    """Delete the visitor's conversations (messages, ChatKit threads) and leads; audited with counts."""
    found = visitor_find(actor=actor, agency=agency, visitor_id=visitor_id, email=email)
    counts: dict[str, int] = {"conversation": 0, "message": 0, "lead": 0}
    with transaction.atomic():
        lead_ids = list(found.leads.values_list("pk", flat=True))
        conversation_ids = list(found.conversations.values_list("pk", flat=True))
        _deleted(counts, Lead.objects.filter(pk__in=lead_ids).delete())
        _deleted(counts, Conversation.objects.filter(pk__in=conversation_ids).delete())
        audit_record(
            agency=agency,
            actor=actor.user,
            action=AuditEvent.Action.VISITOR_ERASED,
            target=found.target,
            details={"conversations": counts["conversation"], "messages": counts["message"], "leads": counts["lead"]},
        )
    return counts
