"""Reads for widgets: one access function per object, scoped to the user's agencies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, reduce
from operator import or_
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core import signing
from django.db import connection
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from licenses.crypto import secret_hint
from licenses.hosts import host_serves_agency
from licenses.models import Agency, License, LicenseUsage, Membership, month_start
from licenses.selectors import REASON_MESSAGES, license_conversations_left, license_status_reason
from widgets.models import Channel, Conversation, KnowledgeEntry, PreviewLink, Product, Widget, WidgetVersion
from widgets.services.preview_links import SALT
from widgets.services.widgets import SECRET_NAMES


def widget_list_for_user(
    *, user: AbstractBaseUser | AnonymousUser, agency: Agency | None, license: License | None = None
) -> QuerySet[Widget]:
    """Widgets of the user's current agency (optionally one license)."""
    if not user.is_authenticated or agency is None:
        return Widget.objects.none()
    qs = Widget.objects.select_related("license", "license__agency", "published_version").filter(
        license__agency=agency, license__agency__memberships__user=user
    )
    if license is not None:
        qs = qs.filter(license=license)
    return qs.order_by("license__client_name", "name", "id")


def widget_get_for_user(*, user: AbstractBaseUser | AnonymousUser, public_id: str) -> tuple[Widget, Membership]:
    """The one access check for a widget: the user is a member of the widget's agency, else 404.

    Returns the widget and the membership that grants access (its role decides what may change).
    """
    if not user.is_authenticated:
        raise Http404("Widget not found.")
    widget = (
        Widget.objects.select_related("license", "license__agency", "published_version")
        .filter(public_id=public_id, license__agency__memberships__user=user)
        .first()
    )
    if widget is None:
        raise Http404("Widget not found.")
    membership = Membership.objects.get(user=user, agency_id=widget.license.agency_id)
    return widget, membership


def widget_versions(*, widget: Widget) -> QuerySet[WidgetVersion]:
    return widget.versions.select_related("published_by").order_by("-number")


def widget_get_published(*, license: License, public_id: str | None = None) -> Widget | None:
    """The license's published widget for public serving (the named one, else the first published)."""
    qs = Widget.objects.select_related("published_version").filter(license=license, published_version__isnull=False)
    if public_id:
        qs = qs.filter(public_id=public_id)
    return qs.order_by("created_at", "id").first()


def openai_api_key(*, secrets: dict | None) -> str:
    """The key every OpenAI call of a widget uses: the tenant's own (an encrypted widget secret), else the
    platform key (`OPENAI_API_KEY`), else "". Server-side only: never in a response."""
    return (secrets or {}).get("openai_api_key") or settings.OPENAI_API_KEY or ""


def chat_conversation_find(*, widget: Widget, session_id: str) -> Conversation | None:
    return (
        Conversation.objects.filter(widget=widget, channel=Channel.CHAT, session_id=session_id, is_preview=False)
        .order_by("started_at", "id")
        .first()
    )


def _session_lookup_params(*, widget: Widget, license: License, session_id: str, month: Any) -> list[Any]:
    return [widget.pk, Channel.CHAT.value, session_id, False, *([license.pk, month] * 2)]


async def chat_session_lookup_async(*, widget: Widget, license: License, session_id: str) -> tuple[int | None, int]:
    """`chat_session_lookup` on the running server loop's own PostgreSQL connections (`widgets.aio.pg_async`,
    callers check `pg_async_available`): the same statement, no DB-step thread."""
    from widgets.aio import pg_async

    month = month_start(timezone.now().date())  # psycopg adapts a date itself
    params = _session_lookup_params(widget=widget, license=license, session_id=session_id, month=month)
    ((conversation_id, conversations, chatkit_sessions),) = await pg_async(_session_lookup_sql("postgresql"), params)
    left = license_conversations_left(
        license=license, conversations=conversations or 0, chatkit_sessions=chatkit_sessions or 0
    )
    return conversation_id, left


def chat_session_lookup(*, widget: Widget, license: License, session_id: str) -> tuple[int | None, int]:
    """A chat turn's database check in ONE statement: (the session's conversation as
    `chat_conversation_find` finds it — its id, or None —, the license's monthly conversations quota left).

    Issue 11 bench: the first turn of every session ran these as two ORM queries, ~1.1 ms of CPU together
    on the bench machine (most of it building the queries); this statement is a fixed text."""
    with connection.cursor() as cursor:
        cursor.execute(
            _session_lookup_sql(connection.vendor),
            _session_lookup_params(
                widget=widget,
                license=license,
                session_id=session_id,
                month=connection.ops.adapt_datefield_value(month_start(timezone.now().date())),
            ),
        )
        conversation_id, conversations, chatkit_sessions = cursor.fetchone()
    left = license_conversations_left(
        license=license, conversations=conversations or 0, chatkit_sessions=chatkit_sessions or 0
    )
    return conversation_id, left


@cache
def _session_lookup_sql(vendor: str) -> str:
    """`chat_session_lookup`'s statement (built once per database vendor, from the models' names):
    `chat_conversation_find`'s filter and order, and the month's `LicenseUsage` row's two counts (NULL when
    it has none), as scalar subqueries (PostgreSQL and SQLite). Values are parameters only."""
    quote = connection.ops.quote_name
    conversation, usage = Conversation._meta, LicenseUsage._meta
    c = {f.name: quote(f.column) for f in conversation.concrete_fields}
    u = {f.name: quote(f.column) for f in usage.concrete_fields}
    where = f"{c['widget']} = %s AND {c['channel']} = %s AND {c['session_id']} = %s AND {c['is_preview']} = %s"
    order = f"{c['started_at']}, {c['id']}"
    conversations = f"SELECT {c['id']} FROM {quote(conversation.db_table)} WHERE {where} ORDER BY {order} LIMIT 1"  # noqa: S608
    month = f"FROM {quote(usage.db_table)} WHERE {u['license']} = %s AND {u['month']} = %s"
    counts = [f"SELECT {u[name]} {month}" for name in ("conversations", "chatkit_sessions")]  # noqa: S608
    return f"SELECT ({conversations}), ({counts[0]}), ({counts[1]})"


def secrets_status(*, widget: Widget) -> dict[str, dict[str, Any]]:
    """Whether each secret is set and its last 4 characters; never the value."""
    stored = widget.secrets or {}
    return {name: secret_hint(stored.get(name)) for name in SECRET_NAMES}


@dataclass(frozen=True)
class PreviewLinkLookup:
    link: PreviewLink | None
    # ok | invalid | expired | revoked (the link) | license_<reason> (its license may not serve, e.g.
    # license_suspended: share links stop with the widgets)
    reason: str

    @property
    def ok(self) -> bool:
        return self.reason == "ok"

    @property
    def gone(self) -> bool:
        """Expired or revoked: 410, the link will not work again."""
        return self.reason in ("expired", "revoked")

    def refusal(self) -> tuple[str, str, int]:
        """(code, message, status) of a refused share-link call: the license's own reason (403) when it may not
        serve, else `preview_unavailable` (410) for a dead or forged link."""
        if self.reason.startswith("license_"):
            code = self.reason.removeprefix("license_")
            return code, REASON_MESSAGES[code], 403
        return "preview_unavailable", "This preview link has expired or was revoked.", 410


def preview_link_resolve(*, token: str) -> PreviewLinkLookup:
    try:
        token_id = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return PreviewLinkLookup(None, "invalid")
    link = PreviewLink.objects.select_related("widget", "widget__license").filter(token_id=token_id).first()
    if link is None or not host_serves_agency(link.widget.license.agency_id):
        return PreviewLinkLookup(None, "invalid")  # another agency's link is unknown on an agency's own domain
    if link.revoked_at is not None:
        return PreviewLinkLookup(link, "revoked")
    if link.expires_at <= timezone.now():
        return PreviewLinkLookup(link, "expired")
    serving = license_status_reason(license=link.widget.license)
    if serving != "ok":
        return PreviewLinkLookup(link, f"license_{serving}")
    return PreviewLinkLookup(link, "ok")


SEARCH_MAX_SCAN = 2000  # rows scored in Python on SQLite; Postgres ranks in the database


SEARCH_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        """
a an and are as at be by can could do does for from have how
i in is it me my of on or our please show tell that the there
this to under up us we what when where which who why will with you your
about any anything dollars dollar price cost
""",
    )
)


def search_tokens(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9]+", (text or "").lower())
    out: list[str] = []
    for word in words:
        if word in SEARCH_STOPWORDS or len(word) < 2:
            continue
        stem = (
            word[:-2]
            if word.endswith("es") and len(word) > 4
            else word[:-1]
            if word.endswith("s") and len(word) > 3
            else word
        )
        if stem not in out:
            out.append(stem)
    return out[:12]


def search_score(tokens: list[str], weighted: list[tuple[str, int]]) -> int:
    score = 0
    for text, weight in weighted:
        hay = set(search_tokens(text))
        score += weight * sum(1 for t in tokens if t in hay or any(h.startswith(t) for h in hay))
    return score


def knowledge_search(*, widget: Widget, query: str, limit: int = 3) -> list[KnowledgeEntry]:
    """The widget's best knowledge entries for `query` (never another widget's)."""
    tokens = search_tokens(query)
    if not tokens:
        return []
    qs = KnowledgeEntry.objects.filter(widget=widget)
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

        vector = (
            SearchVector("question", weight="A", config="english")
            + SearchVector("tags", weight="A", config="english")
            + SearchVector("answer", weight="B", config="english")
        )
        search = reduce(or_, [SearchQuery(t, config="english") for t in tokens])
        return list(
            qs.annotate(rank=SearchRank(vector, search)).filter(rank__gt=0).order_by("-rank", "position", "id")[:limit]
        )
    scored = [
        (search_score(tokens, [(e.question, 3), (e.tags, 2), (e.answer, 1)]), e)
        for e in qs.order_by("position", "id")[:SEARCH_MAX_SCAN]
    ]
    return [e for s, e in sorted(scored, key=lambda x: (-x[0], x[1].position, x[1].pk)) if s > 0][:limit]


def product_search(*, widget: Widget, query: str, max_price: Decimal | None = None, limit: int = 4) -> list[Product]:
    qs = Product.objects.filter(widget=widget)
    if max_price is not None:
        qs = qs.filter(price__lte=max_price)
    tokens = search_tokens(query)
    rows = list(qs.order_by("-in_stock", "price", "id")[:SEARCH_MAX_SCAN])
    if not tokens:
        return rows[:limit]
    scored = [(search_score(tokens, [(p.title, 3), (p.sku, 3), (p.description, 1)]), p) for p in rows]
    return [p for s, p in sorted(scored, key=lambda x: (-x[0], not x[1].in_stock)) if s > 0][:limit]
