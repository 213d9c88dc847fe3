"""Leads from every channel (voice tool, trade-in form, chat): stored, then delivered to the CRM."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from widgets.models import Conversation, Lead, Widget


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
    from widgets.tasks import lead_deliver

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
        transaction.on_commit(lambda: lead_deliver.delay(lead.pk))
    return lead
