"""/app/conversations/ and /app/leads/: every conversation and lead of the agency (widgets/inbox.py).

Members of the agency read (viewers included); editors retry a lead's delivery. Another agency's
conversation or lead answers 404, like an unknown id.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from licenses.api import ApiError
from licenses.app_shell import agency_required, forbidden, render_app
from licenses.models import Membership
from licenses.selectors import license_list_for_user
from widgets import inbox
from widgets.models import Channel, Lead
from widgets.selectors import widget_list_for_user
from widgets.services.leads import lead_retry

CSV_MAX_ROWS = 200_000


def _choices(request: HttpRequest, membership: Membership) -> dict:
    return {
        "clients": list(license_list_for_user(user=request.user, agency=membership.agency)),
        "widgets": list(widget_list_for_user(user=request.user, agency=membership.agency).order_by("name")),
    }


@agency_required
@require_GET
def conversation_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    filters = inbox.filters_clean(request.GET)
    qs = inbox.conversations(agency=membership.agency, filters=filters)
    page = inbox.conversation_page(qs, before=request.GET.get("before", ""), after=request.GET.get("after", ""))
    return render_app(
        request,
        "app/conversations.html",
        {
            "nav": "conversations",
            "filters": filters,
            "query": filters.query(),
            "page": page,
            "channels": Channel.choices,
            "statuses": inbox.STATUSES,
            **_choices(request, membership),
        },
        status=400 if filters.errors else 200,
    )


@agency_required
@require_GET
def conversation_detail(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    conversation = inbox.conversation_get(agency=membership.agency, pk=pk)
    if conversation is None:
        raise Http404("No such conversation.")
    turns = inbox.transcript(conversation)
    return render_app(
        request,
        "app/conversation.html",
        {
            "nav": "conversations",
            "conversation": conversation,
            "turns": turns,
            "leads": list(conversation.leads.order_by("created_at")),
            "usage": conversation.usage or {},
        },
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_response(rows: Iterator[list], name: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response = StreamingHttpResponse(
        (writer.writerow([inbox.csv_cell(v) for v in row]) for row in rows), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


@agency_required
@require_GET
def conversation_csv(request: HttpRequest, membership: Membership) -> HttpResponse:
    filters = inbox.filters_clean(request.GET)
    if filters.errors:
        return conversation_list(request)
    qs = inbox.conversations(agency=membership.agency, filters=filters).order_by("-started_at", "-pk")

    def rows() -> Iterator[list]:
        yield ["id", "started_at", "ended_at", "client", "widget", "channel", "status", "turns", "lead", "cost_usd"] + [
            "visitor_id",
            "page_url",
            "end_reason",
        ]
        for c in qs[:CSV_MAX_ROWS].iterator(chunk_size=2000):
            yield [
                c.pk,
                c.started_at.isoformat(),
                c.ended_at.isoformat() if c.ended_at else "",
                c.widget.license.client_name,
                c.widget.name,
                c.channel,
                c.status,
                c.turns,
                "yes" if c.has_lead else "no",
                c.cost_usd,
                c.visitor_id,
                c.page_url,
                c.end_reason,
            ]

    return csv_response(rows(), "conversations")


@agency_required
@require_GET
def lead_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    filters = inbox.lead_filters_clean(request.GET)
    paginator = Paginator(inbox.leads(agency=membership.agency, filters=filters), inbox.PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render_app(
        request,
        "app/leads.html",
        {
            "nav": "leads",
            "filters": filters,
            "query": filters.query(),
            "page": page,
            "deliveries": Lead.Delivery.choices,
            "can_retry": membership.can_edit,
            "clients": list(license_list_for_user(user=request.user, agency=membership.agency)),
        },
        status=400 if filters.errors else 200,
    )


@agency_required
@require_GET
def lead_csv(request: HttpRequest, membership: Membership) -> HttpResponse:
    qs = inbox.leads(agency=membership.agency, filters=inbox.lead_filters_clean(request.GET))

    def rows() -> Iterator[list]:
        yield ["id", "created_at", "client", "widget", "source", "name", "email", "phone", "interest"] + [
            "conversation",
            "delivery_status",
            "delivery_attempts",
            "delivered_at",
            "last_error",
        ]
        for lead in qs[:CSV_MAX_ROWS].iterator(chunk_size=2000):
            yield [
                lead.pk,
                lead.created_at.isoformat(),
                lead.widget.license.client_name,
                lead.widget.name,
                lead.source,
                lead.name,
                lead.email,
                lead.phone,
                lead.interest,
                lead.conversation_id or "",
                lead.delivery_status,
                lead.delivery_attempts,
                lead.delivered_at.isoformat() if lead.delivered_at else "",
                lead.last_error,
            ]

    return csv_response(rows(), "leads")


@agency_required
@require_POST
def lead_retry_view(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    lead = inbox.lead_get(agency=membership.agency, pk=pk)
    if lead is None:
        raise Http404("No such lead.")
    try:
        lead_retry(actor=membership, lead=lead)
    except ApiError as exc:
        if exc.status_code == 403:
            return forbidden(request, exc)
        messages.error(request, exc.message)
        return redirect("app-leads")
    messages.success(request, f"Delivery of {lead.name or lead.email or 'the lead'} queued again.")
    return redirect("app-leads")
