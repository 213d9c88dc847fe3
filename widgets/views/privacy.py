"""/app/privacy/: the agency's retention window, a visitor's data (find, export, erase) and the audit log.

Every member sees the page; changing retention and the visitor tools are for admins and owners
(the services check the role: 403 otherwise).
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from licenses import services as license_services
from licenses.api import ApiError
from licenses.app_shell import agency_required, forbidden, render_app
from licenses.models import Agency, AuditEvent, Membership
from widgets import privacy

AUDIT_SHOWN = 50


def _page(request: HttpRequest, membership: Membership, **context) -> HttpResponse:
    agency = membership.agency
    status = context.pop("status", 200)
    return render_app(
        request,
        "app/privacy.html",
        {
            "nav": "privacy",
            "agency": agency,
            "retention_choices": Agency.RETENTION_CHOICES,
            "can_manage": membership.has_role(Membership.Role.ADMIN),
            "audit": AuditEvent.objects.filter(agency=agency).select_related("actor")[:AUDIT_SHOWN],
            "errors": {},
            "lookup": {"visitor_id": "", "email": ""},
            **context,
        },
        status=status,
    )


@agency_required
@require_http_methods(["GET", "POST"])
def privacy_page(request: HttpRequest, membership: Membership) -> HttpResponse:
    """GET: the page (with `?visitor_id=&email=`: what the agency holds on that visitor).
    POST: the retention window."""
    if request.method == "POST":
        raw = request.POST.get("retention_days", "").strip()
        try:
            days = int(raw) if raw else None
        except ValueError:
            days = -1  # refused by the service with the field error
        try:
            license_services.agency_retention_set(actor=membership, agency=membership.agency, days=days)
        except ApiError as exc:
            if exc.status_code == 403:
                return forbidden(request, exc)
            return _page(request, membership, errors=exc.fields or {"retention_days": [exc.message]}, status=400)
        label = dict(Agency.RETENTION_CHOICES).get(days, "")
        done = f"Conversations and leads are now kept for {label}." if days else "Everything is kept."
        messages.success(request, done)
        return redirect("app-privacy")
    lookup = {k: request.GET.get(k, "").strip() for k in ("visitor_id", "email")}
    if not any(lookup.values()):
        return _page(request, membership)
    try:
        found = privacy.visitor_find(actor=membership, agency=membership.agency, **lookup)
    except ApiError as exc:
        if exc.status_code == 403:
            return forbidden(request, exc)
        return _page(request, membership, lookup=lookup, errors=exc.fields or {"visitor_id": [exc.message]}, status=400)
    return _page(request, membership, lookup=lookup, found=found.counts())


@agency_required
@require_POST
def privacy_visitor(request: HttpRequest, membership: Membership) -> HttpResponse:
    """POST action=export → a JSON download; action=erase (with confirm=yes) → deleted, back to the page."""
    lookup = {k: request.POST.get(k, "").strip() for k in ("visitor_id", "email")}
    action = request.POST.get("action", "")
    try:
        if action == "export":
            document = privacy.visitor_export(actor=membership, agency=membership.agency, **lookup)
            stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
            response = HttpResponse(
                json.dumps(document, indent=2, ensure_ascii=False), content_type="application/json; charset=utf-8"
            )
            response["Content-Disposition"] = f'attachment; filename="visitor-data-{stamp}.json"'
            response["Cache-Control"] = "no-store"
            return response
        if action == "erase":
            if request.POST.get("confirm") != "yes":
                found = privacy.visitor_find(actor=membership, agency=membership.agency, **lookup)
                errors = {"confirm": ["Tick the box to confirm: erasing cannot be undone."]}
                return _page(request, membership, lookup=lookup, found=found.counts(), errors=errors, status=400)
            counts = privacy.visitor_erase(actor=membership, agency=membership.agency, **lookup)
            messages.success(
                request,
                f"Erased {counts['conversation']} conversation(s), {counts['message']} message(s) and "
                f"{counts['lead']} lead(s).",
            )
            return redirect("app-privacy")
        raise ApiError("invalid", "Choose export or erase.", fields={"action": ["Choose export or erase."]})
    except ApiError as exc:
        if exc.status_code == 403:
            return forbidden(request, exc)
        return _page(request, membership, lookup=lookup, errors=exc.fields or {"visitor_id": [exc.message]}, status=400)
