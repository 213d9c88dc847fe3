"""/admin/analytics/: the analytics of every agency for platform staff (issue 13.7), in the admin's look,
with the licenses near a monthly cap or their expiry flagged (widgets/analytics.py `staff_report`)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from widgets import analytics

PERIODS = (7, 30, 90)


@staff_member_required
@require_GET
def staff_analytics(request: HttpRequest) -> HttpResponse:
    try:
        days = int(request.GET.get("days", 30))
    except ValueError:
        days = 30
    days = days if days in PERIODS else 30
    analytics.rollup_today_for_all()
    return render(
        request,
        "admin/switchboard_analytics.html",
        {
            **admin.site.each_context(request),
            "title": "Analytics across agencies",
            "report": analytics.staff_report(days=days),
            "days": days,
            "periods": PERIODS,
            "near_cap": analytics.NEAR_CAP_PERCENT,
            "expiry_days": analytics.EXPIRY_WARNING_DAYS,
        },
    )
