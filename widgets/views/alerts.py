"""/app/alerts/: the agency's bot-down incidents (open first) and where alerts go (widgets/health.py).

Every member sees the incidents; admins and owners set the alert webhook (the service checks the role).
Emails go to the agency's admins and owners.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods

from licenses.api import ApiError
from licenses.app_shell import agency_required, forbidden, render_app
from licenses.models import Membership
from licenses.selectors import agency_alert_emails
from widgets import health


@agency_required
@require_http_methods(["GET", "POST"])
def alerts_page(request: HttpRequest, membership: Membership) -> HttpResponse:
    agency = membership.agency
    errors: dict[str, list[str]] = {}
    value = agency.alert_webhook_url
    if request.method == "POST":
        value = request.POST.get("alert_webhook_url", "")
        secret = request.POST.get("alert_webhook_secret", "")
        clear = request.POST.get("clear_secret") == "yes"
        try:
            health.agency_alert_webhook_set(
                actor=membership, agency=agency, url=value, secret="" if clear else (secret or None)
            )
        except ApiError as exc:
            if exc.status_code == 403:
                return forbidden(request, exc)
            errors = exc.fields or {"alert_webhook_url": [exc.message]}
        else:
            messages.success(request, "Alert settings saved.")
            return redirect("app-alerts")
    recipients = agency_alert_emails(agency=agency)
    return render_app(
        request,
        "app/alerts.html",
        {
            "nav": "alerts",
            "window": settings.HEALTH_WINDOW_MINUTES,
            "agency": agency,
            "incidents": health.incidents_for_agency(agency=agency),
            "can_manage": membership.has_role(Membership.Role.ADMIN),
            "value": value,
            "secret_set": bool(health.alert_secret(agency)),
            "recipients": list(recipients),
            "errors": errors,
        },
        status=400 if errors else 200,
    )
