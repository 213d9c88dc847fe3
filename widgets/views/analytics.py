"""/app/analytics/: the agency's (or one client's) conversations, voice minutes, cost, failures, leads,
top questions and usage against caps, as charts, a table and a CSV for rebilling (widgets/analytics.py).
Every member reads it; only the agency's own licenses can be picked."""

from __future__ import annotations

from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from licenses.app_shell import agency_required, render_app
from licenses.models import Membership
from licenses.selectors import license_list_for_user
from widgets import analytics
from widgets.inbox import csv_cell
from widgets.models import Channel
from widgets.views.inbox import csv_response

PERIODS = (7, 30, 90)


def _params(request: HttpRequest, membership: Membership) -> tuple[int, object, list, dict[str, str]]:
    try:
        days = int(request.GET.get("days", 30))
    except ValueError:
        days = 30
    days = days if days in PERIODS else 30
    clients = list(license_list_for_user(user=request.user, agency=membership.agency))
    key = request.GET.get("client", "")
    license = next((c for c in clients if c.key == key), None)
    query = {"days": str(days), **({"client": license.key} if license else {})}
    return days, license, clients, query


@agency_required
@require_GET
def analytics_page(request: HttpRequest, membership: Membership) -> HttpResponse:
    analytics.rollup_today_for(membership.agency)
    days, license, clients, query = _params(request, membership)
    report = analytics.report(agency=membership.agency, days=days, license=license, licenses=clients)
    labels = dict(Channel.choices)
    stacks = {labels[c]: analytics.CHANNEL_COLORS[c] for c in Channel.values}
    charts = {
        "conversations": analytics.bar_chart(
            report.days, value=lambda d: {labels[c]: n for c, n in d["by_channel"].items()}, stacks=stacks
        ),
        "voice": analytics.bar_chart(report.days, value=lambda d: round(d["voice_minutes"], 1)),
        "cost": analytics.bar_chart(report.days, value=lambda d: round(float(d["cost_usd"]), 4)),
        "failures": analytics.bar_chart(report.days, value=lambda d: round(100 * d["failure_rate"], 1)),
    }
    return render_app(
        request,
        "app/analytics.html",
        {
            "nav": "analytics",
            "report": report,
            "charts": charts,
            "days": days,
            "periods": PERIODS,
            "clients": clients,
            "license": license,
            "query": query,
        },
    )


@agency_required
@require_GET
def analytics_csv(request: HttpRequest, membership: Membership) -> HttpResponse:
    """Per client, per day: what the agency rebills."""
    analytics.rollup_today_for(membership.agency)
    days, license, _, _ = _params(request, membership)
    rows_by_client = analytics.daily_by_client(agency=membership.agency, days=days, license=license)

    def rows() -> Iterator[list]:
        yield ["day", "client", "license", "conversations", "visitor_turns", "failed_turns", "voice_minutes"] + [
            "tokens",
            "cost_usd",
            "leads",
        ]
        for r in rows_by_client:
            yield [
                r["day"].isoformat(),
                csv_cell(r["widget__license__client_name"]),
                r["widget__license__key"],
                r["conversations"],
                r["turns"],
                r["failed_turns"],
                round((r["voice_seconds"] or 0) / 60, 2),
                r["tokens"],
                r["cost_usd"],
                r["leads"],
            ]

    return csv_response(rows(), "usage")
