"""Analytics (issue 13.3): a daily rollup per widget and channel, and what the analytics page shows.

`rollup_day(day)` recomputes one UTC day from the source rows (conversations started that day, visitor
turns and leads created that day; previews excluded) and replaces that day's `DailyStat` and
`DailyQuestion` rows in one transaction, so it is idempotent and safe to rerun. Celery beat runs it for
today and yesterday every ANALYTICS_ROLLUP_SECONDS; the page also refreshes today for its agency when
the last refresh is older than a minute. Pages read only the rollup tables.

- voice seconds are the billed seconds (`Conversation.audio_in_seconds`, what the license is charged);
- tokens are `usage.total_tokens` (or input + output) of ChatKit and voice conversations;
- failure rate = failed visitor turns / visitor turns;
- a top question is the first visitor message of a conversation, lower-cased, punctuation and extra
  spaces removed, cut at 200 characters.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.utils import timezone

from licenses.models import Agency, License, LicenseUsage, month_start
from widgets.models import Channel, Conversation, DailyQuestion, DailyStat, Lead, Message, Widget

PUNCTUATION = re.compile(r"[^\w\s]+", re.UNICODE)
TODAY_FRESH_SECONDS = 60


def question_normalize(text: str) -> str:
    return " ".join(PUNCTUATION.sub(" ", (text or "").lower()).split())[:200]


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _tokens(usage: Any) -> int:
    if not isinstance(usage, dict):
        return 0
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    return sum(v for k in ("input_tokens", "output_tokens") if isinstance(v := usage.get(k), int))


STAT_FIELDS = ("conversations", "turns", "failed_turns", "voice_seconds", "tokens", "cost_usd", "leads")


def _sums() -> dict[str, Sum]:
    """The rollup's figures summed over whatever the query groups by (days, channels, clients, agencies)."""
    return {name: Sum(name) for name in STAT_FIELDS}


def _zero() -> dict[str, Any]:
    """The rollup's figures (STAT_FIELDS), all nought."""
    return {name: Decimal(0) if name == "cost_usd" else 0.0 if name == "voice_seconds" else 0 for name in STAT_FIELDS}


def rollup_day(day: date, *, widget_ids: list[int] | None = None) -> int:
    """Recompute `day` (for `widget_ids`, or every widget). Returns the DailyStat rows written."""
    start, end = _bounds(day)
    scope = Q() if widget_ids is None else Q(widget_id__in=widget_ids)
    stats: dict[tuple[int, str], dict[str, Any]] = defaultdict(_zero)
    first_question = (
        Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.USER)
        .order_by("created_at", "pk")
        .values("text")[:1]
    )
    conversations = (
        Conversation.objects.filter(scope, is_preview=False, started_at__gte=start, started_at__lt=end)
        .annotate(first_question=Subquery(first_question))
        .values_list("widget_id", "channel", "audio_in_seconds", "cost_usd", "usage", "first_question")
    )
    questions: Counter[tuple[int, str]] = Counter()
    for widget_id, channel, seconds, cost, usage, first in conversations.iterator(chunk_size=2000):
        row = stats[(widget_id, channel)]
        row["conversations"] += 1
        row["voice_seconds"] += seconds or 0.0
        row["cost_usd"] += cost or Decimal(0)
        row["tokens"] += _tokens(usage)
        if first and (q := question_normalize(first)):
            questions[(widget_id, q)] += 1
    message_scope = Q() if widget_ids is None else Q(conversation__widget_id__in=widget_ids)
    turns = (
        Message.objects.filter(
            message_scope,
            role=Message.Role.USER,
            created_at__gte=start,
            created_at__lt=end,
            conversation__is_preview=False,
        )
        .values("conversation__widget_id", "conversation__channel")
        .annotate(n=Count("pk"), failed=Count("pk", filter=~Q(failure_kind="")))
    )
    for t in turns:
        row = stats[(t["conversation__widget_id"], t["conversation__channel"])]
        row["turns"] += t["n"]
        row["failed_turns"] += t["failed"]
    source_channel = {"voice": Channel.VOICE, "chatkit": Channel.CHATKIT}
    leads = Lead.objects.filter(scope, created_at__gte=start, created_at__lt=end).values_list(
        "widget_id", "conversation__channel", "source"
    )
    for widget_id, channel, source in leads:
        stats[(widget_id, channel or source_channel.get(source, Channel.CHAT))]["leads"] += 1
    with transaction.atomic():
        DailyStat.objects.filter(scope, day=day).delete()
        DailyQuestion.objects.filter(scope, day=day).delete()
        DailyStat.objects.bulk_create(
            DailyStat(day=day, widget_id=widget_id, channel=channel, **values)
            for (widget_id, channel), values in stats.items()
        )
        DailyQuestion.objects.bulk_create(
            DailyQuestion(day=day, widget_id=widget_id, question=q, count=n) for (widget_id, q), n in questions.items()
        )
    return len(stats)


def rollup_recent(*, now: datetime | None = None) -> dict[str, int]:
    """Beat task body: today and yesterday (late rows of yesterday land after midnight)."""
    today = (now or timezone.now()).date()
    return {str(day): rollup_day(day) for day in (today - timedelta(days=1), today)}


def rollup_today_for(agency: Agency) -> None:
    """The page's on-demand refresh of today for one agency, at most once a minute."""
    if cache.add(f"sb:analytics:today:{agency.pk}", 1, TODAY_FRESH_SECONDS):
        widget_ids = list(Widget.objects.filter(license__agency=agency).values_list("pk", flat=True))
        rollup_day(timezone.now().date(), widget_ids=widget_ids)


def rollup_today_for_all() -> None:
    """The staff page's on-demand refresh of today, at most once a minute."""
    if cache.add("sb:analytics:today:all", 1, TODAY_FRESH_SECONDS):
        rollup_day(timezone.now().date())


# --- what the page shows ---------------------------------------------------------------------------


@dataclass
class Report:
    days: list[dict[str, Any]]  # one per day, oldest first
    totals: dict[str, Any]
    questions: list[tuple[str, int]]
    usage: list[dict[str, Any]]
    by_client: list[dict[str, Any]]


def report(
    *,
    agency: Agency,
    days: int,
    license: License | None = None,
    today: date | None = None,
    licenses: list[License] | None = None,
) -> Report:
    """`licenses`: the agency's licenses when the caller has them already (saves a query)."""
    today = today or timezone.now().date()
    first = today - timedelta(days=days - 1)
    scope = Q(widget__license__agency=agency, day__gte=first, day__lte=today)
    if license is not None:
        scope &= Q(widget__license=license)
    rows = DailyStat.objects.filter(scope).values("day", "channel").annotate(**_sums())
    empty = _zero()
    by_day: dict[date, dict[str, Any]] = {
        first + timedelta(days=i): {
            "day": first + timedelta(days=i),
            "by_channel": dict.fromkeys(Channel.values, 0),
            **empty,
        }
        for i in range(days)
    }
    for r in rows:
        d = by_day[r["day"]]
        d["by_channel"][r["channel"]] += r["conversations"]
        for k in empty:
            d[k] += r[k] or 0
    for d in by_day.values():
        d["failure_rate"] = d["failed_turns"] / d["turns"] if d["turns"] else 0.0
        d["voice_minutes"] = d["voice_seconds"] / 60
    totals = {k: sum(d[k] for d in by_day.values()) for k in empty}
    totals["voice_minutes"] = totals["voice_seconds"] / 60
    totals["failure_rate"] = totals["failed_turns"] / totals["turns"] if totals["turns"] else 0.0
    q_scope = Q(widget__license__agency=agency, day__gte=first, day__lte=today)
    if license is not None:
        q_scope &= Q(widget__license=license)
    questions = list(
        DailyQuestion.objects.filter(q_scope)
        .values("question")
        .annotate(n=Sum("count"))
        .order_by("-n", "question")
        .values_list("question", "n")[:10]
    )
    by_client = list(
        DailyStat.objects.filter(scope)
        .values("widget__license__key", "widget__license__client_name")
        .annotate(**_sums())
        .order_by("widget__license__client_name")
    )
    usage = license_usage(agency=agency, license=license, licenses=licenses)
    return Report(list(by_day.values()), totals, questions, usage, by_client)


def license_usage(
    *, agency: Agency, license: License | None = None, licenses: list[License] | None = None
) -> list[dict[str, Any]]:
    """This month's usage of each license against its caps (the page's "usage against caps")."""
    month = month_start(timezone.now().date())
    if license is not None:
        chosen = [license]
    elif licenses is not None:
        chosen = sorted((lic for lic in licenses if lic.agency_id == agency.pk), key=lambda lic: lic.client_name)
    else:
        chosen = list(License.objects.filter(agency=agency).order_by("client_name"))
    usage = {u.license_id: u for u in LicenseUsage.objects.filter(license__in=[lic.pk for lic in chosen], month=month)}
    out = []
    for lic in chosen:
        u = usage.get(lic.pk)
        used = {"conversations": u.conversations if u else 0, "voice_minutes": u.voice_minutes if u else 0.0}
        caps = {"conversations": lic.monthly_conversations, "voice_minutes": lic.monthly_voice_minutes}
        out.append(
            {
                "license": lic,
                "rows": [
                    {
                        "name": name,
                        "label": label,
                        "used": used[name],
                        "cap": caps[name],
                        "percent": min(100, round(100 * used[name] / caps[name])) if caps[name] else 0,
                    }
                    for name, label in (("conversations", "Conversations"), ("voice_minutes", "Voice minutes"))
                ],
            }
        )
    return out


# --- charts: server-rendered SVG geometry ------------------------------------------------------------

CHART_W, CHART_H, PAD_L, PAD_B, PAD_T = 720, 180, 44, 22, 10
CHANNEL_COLORS = {Channel.CHAT: "#4f46e5", Channel.CHATKIT: "#0ea5e9", Channel.VOICE: "#f59e0b"}


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def bar_chart(days: list[dict[str, Any]], *, value: Any, stacks: dict[str, str] | None = None) -> dict[str, Any]:
    """Geometry for a (stacked) bar chart: `value(day)` is a number, or a dict {stack: number} with
    `stacks` = {stack: color}. Numbers only: the template escapes every label."""
    n = max(len(days), 1)
    inner_w, inner_h = CHART_W - PAD_L, CHART_H - PAD_B - PAD_T
    slot = inner_w / n
    width = max(slot * 0.7, 1.0)
    values = [value(d) for d in days]
    totals = [sum(v.values()) if isinstance(v, dict) else v for v in values]
    top = _nice_max(max(totals, default=0))
    bars = []
    for i, (d, v) in enumerate(zip(days, values, strict=True)):
        x = PAD_L + i * slot + (slot - width) / 2
        y = float(PAD_T + inner_h)
        parts = v.items() if isinstance(v, dict) else [("value", v)]
        for stack, amount in parts:
            h = inner_h * float(amount) / top if amount else 0.0
            y -= h
            color = (stacks or {}).get(stack, "#4f46e5")
            bars.append(
                {
                    "x": round(x, 1),
                    "y": round(y, 1),
                    "w": round(width, 1),
                    "h": round(h, 1),
                    "color": color,
                    "title": f"{d['day']:%d %b}: {amount:g}" if isinstance(amount, (int, float)) else "",
                }
            )
    ticks = [{"y": round(PAD_T + inner_h - inner_h * f, 1), "label": f"{top * f:g}"} for f in (0, 0.5, 1)]
    labels = [
        {"x": round(PAD_L + i * slot + slot / 2, 1), "text": f"{d['day']:%d %b}"}
        for i, d in enumerate(days)
        if n <= 14 or i % max(1, n // 7) == 0
    ]
    return {
        "w": CHART_W,
        "h": CHART_H,
        "bars": bars,
        "ticks": ticks,
        "labels": labels,
        "base": PAD_T + inner_h,
        "left": PAD_L,
        "legend": [{"name": k, "color": c} for k, c in (stacks or {}).items()],
    }


def daily_by_client(*, agency: Agency, days: int, license: License | None = None) -> list[dict[str, Any]]:
    """The rebilling CSV's rows: per day and client, oldest first."""
    today = timezone.now().date()
    scope = Q(widget__license__agency=agency, day__gte=today - timedelta(days=days - 1), day__lte=today)
    if license is not None:
        scope &= Q(widget__license=license)
    return list(
        DailyStat.objects.filter(scope)
        .values("day", "widget__license__key", "widget__license__client_name")
        .annotate(**_sums())
        .order_by("day", "widget__license__client_name")
    )


# --- the staff view: every agency (issue 13.7) -------------------------------------------------------

NEAR_CAP_PERCENT = 80
EXPIRY_WARNING_DAYS = 14


def staff_report(*, days: int, now: datetime | None = None) -> dict[str, Any]:
    """Across all agencies: the rollup per agency for the period, and the licenses that need a look —
    at NEAR_CAP_PERCENT of a monthly cap or more, or expiring (or in grace) within EXPIRY_WARNING_DAYS."""
    now = now or timezone.now()
    today = now.date()
    agencies = list(
        DailyStat.objects.filter(day__gte=today - timedelta(days=days - 1), day__lte=today)
        .values("widget__license__agency__name", "widget__license__agency__slug")
        .annotate(**_sums())
        .order_by("-conversations", "widget__license__agency__name")
    )
    for a in agencies:
        a["voice_minutes"] = (a["voice_seconds"] or 0) / 60
        a["failure_rate"] = a["failed_turns"] / a["turns"] if a["turns"] else 0.0
    totals = {k: sum(a[k] or 0 for a in agencies) for k in ("conversations", "voice_minutes", "cost_usd", "leads")}
    month = month_start(today)
    usage = {u.license_id: u for u in LicenseUsage.objects.filter(month=month)}
    soon = now + timedelta(days=EXPIRY_WARNING_DAYS)
    flagged = []
    for lic in License.objects.select_related("agency").filter(status=License.Status.ACTIVE).order_by("agency__name"):
        u = usage.get(lic.pk)
        reasons = []
        for name, used, cap in (
            ("conversations", u.conversations if u else 0, lic.monthly_conversations),
            ("voice minutes", u.voice_minutes if u else 0.0, lic.monthly_voice_minutes),
        ):
            if cap and used * 100 >= cap * NEAR_CAP_PERCENT:
                reasons.append(f"{name} {used:g} of {cap} ({round(100 * used / cap)}%)")
        if lic.expires_at and lic.expires_at <= soon:
            when = "expired" if lic.expires_at <= now else "expires"
            grace = f" (+{lic.grace_days} days grace)" if lic.grace_days else ""
            reasons.append(f"{when} {lic.expires_at:%Y-%m-%d}{grace}")
        if reasons:
            flagged.append({"license": lic, "reasons": reasons})
    return {"agencies": agencies, "totals": totals, "flagged": flagged, "days": days}
