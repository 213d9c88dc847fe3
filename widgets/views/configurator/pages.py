"""The shell pages: widgets list, create/duplicate/delete, licenses, members, agency switcher."""

from __future__ import annotations

from datetime import datetime, time

from django.contrib import messages
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from licenses.api import ApiError
from licenses.app_shell import agency_required, forbidden, render_app, role_flags
from licenses.models import Membership, month_start
from licenses.selectors import (
    license_list_for_user,
)
from licenses.tenancy import role_require
from widgets.health import open_incidents_by_widget
from widgets.models import Widget, WidgetType
from widgets.selectors import widget_list_for_user
from widgets.services import widgets as services
from widgets.views.configurator.common import widget_view


def _month_start_dt() -> datetime:
    return timezone.make_aware(datetime.combine(month_start(timezone.now().date()), time.min))


@agency_required
def widget_list(request: HttpRequest, membership: Membership) -> HttpResponse:
    since = _month_start_dt()
    widgets = widget_list_for_user(user=request.user, agency=membership.agency).annotate(
        conversations_month=Count(
            "conversations", filter=Q(conversations__started_at__gte=since, conversations__is_preview=False)
        )
    )
    widgets = list(widgets)
    incidents = open_incidents_by_widget(widget_ids=[w.pk for w in widgets])  # the red "Bot down" badge
    for widget in widgets:
        widget.incident = incidents.get(widget.pk)
    licenses = list(license_list_for_user(user=request.user, agency=membership.agency))
    groups = [{"license": lic, "widgets": [w for w in widgets if w.license_id == lic.pk]} for lic in licenses]
    return render_app(
        request,
        "app/widget_list.html",
        {
            "groups": groups,
            "nav": "widgets",
            **role_flags(membership),
        },
    )


@agency_required
@require_http_methods(["GET", "POST"])
def widget_new(request: HttpRequest, membership: Membership) -> HttpResponse:
    licenses = list(license_list_for_user(user=request.user, agency=membership.agency))
    values = {"name": "", "license": request.GET.get("license", ""), "provider": "n8n"}
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        values = {k: request.POST.get(k, "").strip() for k in ("name", "license", "provider")}
        license = next((lic for lic in licenses if lic.key == values["license"]), None)
        if license is None:
            errors["license"] = ["Choose one of your agency's licenses."]
        if values["provider"] not in WidgetType.values:
            errors["provider"] = ["Choose n8n or ChatKit."]
        if not errors:
            try:
                widget = services.widget_create(
                    license=license,
                    user=request.user,
                    membership=membership,
                    name=values["name"],
                    config={"connection": {"provider": values["provider"]}},
                )
            except ApiError as exc:
                if exc.status_code == 403:
                    return forbidden(request, exc)
                errors = exc.fields or {"form": [exc.message]}
            else:
                messages.success(request, f"Created “{widget.name}”.")
                return redirect("app-widget", public_id=widget.public_id)
    status = 400 if errors else 200
    return render_app(
        request,
        "app/widget_new.html",
        {
            "licenses": licenses,
            "values": values,
            "errors": errors,
            "nav": "widgets",
            "providers": WidgetType.choices,
            **role_flags(membership),
        },
        status=status,
    )


@widget_view
@require_POST
def widget_duplicate(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    try:
        copy = services.widget_duplicate(widget=widget, user=request.user, membership=membership)
    except ApiError as exc:
        if exc.status_code == 403:
            return forbidden(request, exc)
        messages.error(request, exc.message)
        return redirect("app-home")
    messages.success(request, f"Duplicated as “{copy.name}”.")
    return redirect("app-home")


@widget_view
@require_http_methods(["GET", "POST"])
def widget_delete(request: HttpRequest, widget: Widget, membership: Membership) -> HttpResponse:
    if request.method == "POST":
        try:
            services.widget_delete(widget=widget, membership=membership)
        except ApiError as exc:
            return forbidden(request, exc)
        messages.success(request, f"Deleted “{widget.name}”.")
        return redirect("app-home")
    try:
        role_require(membership, Membership.Role.ADMIN, "delete widgets")
    except ApiError as exc:
        return forbidden(request, exc)
    return render_app(request, "app/widget_delete.html", {"widget": widget, "nav": "widgets"})
