"""The inbox and leads (issue 13.1, 13.2): reads of every conversation and lead of an agency, across its
clients' widgets and every channel, with the filters the pages and CSV exports share.

Status of a conversation (one rule, used by the list, the filter and the export):
- **failed**: a turn got no answer (`Message.failure_kind`), a ChatKit run failed (`end_reason`
  `failed:<code>`), or the voice call ended on our side (`upstream_closed`, `worker_lost`);
- **abandoned**: otherwise, when no answer was ever given (the visitor left before the assistant spoke);
- **ok**: the rest.

Pages are keyset-paginated on (started_at, id), newest first, so a page costs the same at row 100,000
as at row 1 (indexes `conversation_recent`, `conversation_widget_recent`). Search is PostgreSQL
full-text (`message_text_fts`, the 'simple' configuration: any language, no stemming) over the
messages, LIKE on SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.db.models import Case, CharField, Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from licenses.models import Agency
from widgets.models import Channel, Conversation, Lead, Message

PAGE_SIZE = 50
STATUSES = ("ok", "failed", "abandoned")
FAILED_REASONS = ("upstream_closed", "worker_lost")


@dataclass
class Filters:
    client: str = ""  # license key
    widget: str = ""  # public id
    channel: str = ""
    status: str = ""
    since: date | None = None
    until: date | None = None
    q: str = ""
    errors: dict[str, list[str]] = field(default_factory=dict)

    def query(self) -> dict[str, str]:
        """The filters as GET parameters (for links and the CSV export)."""
        values = {
            "client": self.client,
            "widget": self.widget,
            "channel": self.channel,
            "status": self.status,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "q": self.q,
        }
        return {k: v for k, v in values.items() if v}


def filters_clean(params: Any) -> Filters:
    """GET parameters → Filters; a bad value is dropped with an error for the form (never a 500)."""
    f = Filters()
    f.client = str(params.get("client", ""))[:64]
    f.widget = str(params.get("widget", ""))[:40]
    channel = str(params.get("channel", ""))
    if channel in Channel.values:
        f.channel = channel
    elif channel:
        f.errors["channel"] = ["Unknown channel."]
    status = str(params.get("status", ""))
    if status in STATUSES:
        f.status = status
    elif status:
        f.errors["status"] = ["Unknown status."]
    for name in ("since", "until"):
        raw = str(params.get(name, ""))[:20]
        if raw:
            try:
                value = parse_date(raw)
            except ValueError:
                value = None
            if value is None:
                f.errors[name] = ["Use a date like 2026-12-01."]
            setattr(f, name, value)
    f.q = " ".join(str(params.get("q", "")).split())[:200].replace("\x00", "")
    return f


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def conversations(*, agency: Agency, filters: Filters) -> QuerySet[Conversation]:
    """The agency's conversations (previews excluded) under `filters`, annotated with what the list shows."""
    failed_turn = Message.objects.filter(conversation=OuterRef("pk")).exclude(failure_kind="")
    answered = Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.ASSISTANT)
    user_turns = (
        Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.USER)
        .order_by()
        .values("conversation")
        .annotate(n=Count("pk"))
        .values("n")
    )
    qs = (
        Conversation.objects.filter(widget__license__agency=agency, is_preview=False)
        .select_related("widget__license")
        .annotate(
            status=Case(
                When(
                    Q(end_reason__startswith="failed") | Q(end_reason__in=FAILED_REASONS) | Exists(failed_turn),
                    then=Value("failed"),
                ),
                When(~Exists(answered), then=Value("abandoned")),
                default=Value("ok"),
                output_field=CharField(),
            ),
            turns=Coalesce(Subquery(user_turns, output_field=IntegerField()), 0),
            has_lead=Exists(Lead.objects.filter(conversation=OuterRef("pk"))),
        )
    )
    if filters.client:
        qs = qs.filter(widget__license__key=filters.client)
    if filters.widget:
        qs = qs.filter(widget__public_id=filters.widget)
    if filters.channel:
        qs = qs.filter(channel=filters.channel)
    if filters.status:
        qs = qs.filter(_status_q(filters.status))
    if filters.since:
        qs = qs.filter(started_at__gte=_day_start(filters.since))
    if filters.until:
        qs = qs.filter(started_at__lt=_day_start(filters.until) + timedelta(days=1))
    if filters.q:
        qs = qs.filter(pk__in=_matching_conversations(filters.q))
    return qs


def _status_q(status: str) -> Q:
    """The status rule as a WHERE clause the planner can drive from indexes: failed conversations come
    from the small partial index of failed turns (`message_failed`) and `end_reason`, instead of
    evaluating the status of every row newest-first until a page is full."""
    failed_turns = Message.objects.exclude(failure_kind="").order_by().values("conversation_id")
    failed = Q(end_reason__startswith="failed") | Q(end_reason__in=FAILED_REASONS) | Q(pk__in=failed_turns)
    answered = Exists(Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.ASSISTANT))
    if status == "failed":
        return failed
    return ~failed & (answered if status == "ok" else ~answered)


SEARCH_IDS_MAX = 5000


def _matching_conversations(q: str) -> Any:
    """Conversations with a message matching `q`: a list of ids when the term is selective (found from
    the GIN index first, then the page is read by id), else a subquery the planner joins while it walks
    the newest conversations (a common word matches within the first few hundred)."""
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVector

        matches = Message.objects.annotate(fts=SearchVector("text", config="simple")).filter(
            fts=SearchQuery(q, config="simple", search_type="websearch")
        )
        ids = list(matches.order_by().values_list("conversation_id", flat=True)[:SEARCH_IDS_MAX])
        if len(ids) < SEARCH_IDS_MAX:
            return set(ids)
        return matches.order_by().values("conversation_id")
    matches = Message.objects.all()
    for word in q.split()[:10]:  # every word, like the websearch query's default AND
        matches = matches.filter(text__icontains=word)
    return matches.order_by().values("conversation_id")


@dataclass
class Page:
    rows: list[Conversation]
    newer: str  # cursor for the previous (newer) page, "" on the first
    older: str  # cursor for the next (older) page, "" on the last


def _cursor(row: Conversation) -> str:
    return f"{row.started_at.isoformat()}~{row.pk}"


def _cursor_parse(raw: str) -> tuple[datetime, int] | None:
    stamp, _, pk = (raw or "").partition("~")
    try:
        when = parse_datetime(stamp)
        return (when, int(pk)) if when is not None and pk else None
    except (ValueError, OverflowError):
        return None


def conversation_page(qs: QuerySet[Conversation], *, before: str = "", after: str = "") -> Page:
    """Keyset page of `qs`, newest first: `before` = older than that row, `after` = newer than it."""
    newest_first = qs.order_by("-started_at", "-pk")
    if (key := _cursor_parse(after)) is not None:
        when, pk = key
        rows = list(
            qs.filter(Q(started_at__gt=when) | Q(started_at=when, pk__gt=pk)).order_by("started_at", "pk")[
                : PAGE_SIZE + 1
            ]
        )
        more_newer = len(rows) > PAGE_SIZE
        rows = list(reversed(rows[:PAGE_SIZE]))
        return Page(rows, _cursor(rows[0]) if more_newer and rows else "", _cursor(rows[-1]) if rows else "")
    if (key := _cursor_parse(before)) is not None:
        when, pk = key
        newest_first = newest_first.filter(Q(started_at__lt=when) | Q(started_at=when, pk__lt=pk))
    rows = list(newest_first[: PAGE_SIZE + 1])
    more_older = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    newer = _cursor(rows[0]) if key is not None and rows else ""
    return Page(rows, newer, _cursor(rows[-1]) if more_older else "")


def conversation_get(*, agency: Agency, pk: int) -> Conversation | None:
    """One conversation of the agency (another agency's id: None, the same answer as an unknown id)."""
    return conversations(agency=agency, filters=Filters()).filter(pk=pk).first()


def transcript(conversation: Conversation) -> list[Message]:
    return list(conversation.messages.order_by("created_at", "pk"))


# --- leads -----------------------------------------------------------------------------------------


@dataclass
class LeadFilters:
    client: str = ""
    delivery: str = ""
    q: str = ""
    errors: dict[str, list[str]] = field(default_factory=dict)

    def query(self) -> dict[str, str]:
        return {k: v for k, v in {"client": self.client, "delivery": self.delivery, "q": self.q}.items() if v}


def lead_filters_clean(params: Any) -> LeadFilters:
    f = LeadFilters(client=str(params.get("client", ""))[:64])
    delivery = str(params.get("delivery", ""))
    if delivery in Lead.Delivery.values:
        f.delivery = delivery
    elif delivery:
        f.errors["delivery"] = ["Unknown delivery status."]
    f.q = " ".join(str(params.get("q", "")).split())[:200].replace("\x00", "")
    return f


def leads(*, agency: Agency, filters: LeadFilters) -> QuerySet[Lead]:
    qs = Lead.objects.filter(widget__license__agency=agency).select_related("widget__license", "conversation")
    if filters.client:
        qs = qs.filter(widget__license__key=filters.client)
    if filters.delivery:
        qs = qs.filter(delivery_status=filters.delivery)
    if filters.q:
        qs = qs.filter(Q(name__icontains=filters.q) | Q(email__icontains=filters.q) | Q(phone__icontains=filters.q))
    return qs.order_by("-created_at", "-pk")


def lead_get(*, agency: Agency, pk: int) -> Lead | None:
    return Lead.objects.filter(widget__license__agency=agency, pk=pk).select_related("widget__license").first()


# --- CSV ---------------------------------------------------------------------------------------------

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run: text starting like a formula gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text
