"""ChatKit server mode's writes: per-owner rate limits, the monthly cap a new thread reserves, a failed
conversation, and each run's tokens and estimated cost on the conversation and the license's month
(`chatkit_usage_record`). Turns land as `widgets.Message` rows through widgets.services.turns. The page's
options live in chatkit.options, the visitor and page tokens in chatkit.tokens.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, IntegerField, OuterRef, Subquery, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.db.models.lookups import GreaterThan
from django.utils import timezone

from chatkit.client import ChatKitError
from licenses.models import DEFAULT_LIMITS, License, LicenseUsage, month_start
from licenses.selectors import REASON_MESSAGES
from licenses.services import usage_increment
from widgets.models import Conversation
from widgets.ratelimit import rate_hits_peek
from widgets.services.turns import chatkit_turn_record

# --- server mode: limits, the monthly cap, turns and usage -----------------------------------


def chatkit_rate_check(
    *, license: License, owner: str, generates: bool, peek: str | None = None
) -> tuple[int | None, object]:
    """Per visitor and per license: model calls (`generates`) per minute, and every request per visitor
    (the shared limiter, widgets/ratelimit.py), in ONE Redis round trip that also reads the cache key
    `peek` (the license's cache generation); a visitor over its own limit uses none of its license's.
    (Seconds to wait when over a limit else None, the peeked value.)"""
    visitor = hashlib.sha256(owner.encode()).hexdigest()[:24]
    checks = (
        (
            (f"chatkit:visitor:{license.pk}:{visitor}", settings.CHATKIT_VISITOR_RATE_PER_MINUTE),
            (f"chatkit:license:{license.pk}", settings.CHATKIT_LICENSE_RATE_PER_MINUTE),
        )
        if generates
        else ((f"chatkit:reads:{license.pk}:{visitor}", settings.CHATKIT_READ_RATE_PER_MINUTE),)
    )
    return rate_hits_peek(checks, peek=peek)


def chatkit_thread_reserve(*, license: License) -> None:
    """Count a new public ChatKit thread against the monthly cap, before anything streams. Raises 429.

    One conditional UPDATE (`... WHERE conversations + chatkit_sessions < cap`, the cap read from the
    license's row in the same statement): exact under concurrency (PostgreSQL re-checks the condition on
    the newest row after waiting for a concurrent increment), and the month's row is locked only while
    the statement runs, so concurrent new threads of one license never queue behind a transaction that
    waits for its thread (bench/chatkit_server.py). The month's row is created on first use."""
    now = timezone.now()
    month = month_start(now.date())
    cap = Subquery(
        License.objects.filter(pk=OuterRef("license_id")).values(
            cap=Coalesce(
                Cast(KT("limits__monthly_conversations"), IntegerField()),
                Value(DEFAULT_LIMITS["monthly_conversations"]),
            )
        )[:1]
    )
    for _ in range(2):
        counted = (
            LicenseUsage.objects.filter(license_id=license.pk, month=month)
            .filter(GreaterThan(cap, F("conversations") + F("chatkit_sessions")))
            .update(chatkit_sessions=F("chatkit_sessions") + 1, updated_at=now)
        )
        if counted:
            return
        if LicenseUsage.objects.filter(license_id=license.pk, month=month).exists():
            break
        try:
            with transaction.atomic():
                LicenseUsage.objects.create(license_id=license.pk, month=month)
        except IntegrityError:
            pass  # another request created the row first
    raise ChatKitError("quota_exceeded", REASON_MESSAGES["quota_exceeded"], 429)


def chatkit_thread_unreserve(*, license: License) -> None:
    """Give back a count taken by `chatkit_thread_reserve` for a thread that could not be opened."""
    usage_increment(license=license, chatkit_sessions=-1)


def chatkit_conversation_fail(*, conversation_id: int, code: str) -> None:
    """Mark the conversation failed (the agency sees why); the next good turn clears it."""
    Conversation.objects.filter(pk=conversation_id).exclude(end_reason="deleted_by_visitor").update(
        end_reason=f"failed:{code}"[:64],
        failed_at=timezone.now(),  # failed_at: bot health (widgets/health.py)
    )


USAGE_KEYS = ("requests", "input_tokens", "input_cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")


def chatkit_cost(*, model: str, usage: dict[str, int]) -> Decimal:
    """Estimated USD from settings.CHATKIT_MODELS (list prices per 1M tokens)."""
    prices = settings.CHATKIT_MODELS.get(model) or settings.CHATKIT_MODELS[settings.CHATKIT_DEFAULT_MODEL]
    cached = usage.get("input_cached_tokens", 0)
    micro = (
        prices["input"] * max(usage.get("input_tokens", 0) - cached, 0)
        + prices["input_cached"] * cached
        + prices["output"] * usage.get("output_tokens", 0)
    )
    return (Decimal(str(micro)) / Decimal(1_000_000)).quantize(Decimal("0.000001"))


def chatkit_usage_record(
    *,
    conversation_id: int,
    model: str,
    usage: dict[str, int],
    counted: bool,
    turn: dict[str, Any] | None = None,
) -> Decimal:
    """Add one run's tokens and estimated cost to its conversation and (unless a preview) the license's month,
    and the run's completed turn (`turn`: chatkit_turn_record's arguments) in the same transaction.

    Called from `finally`, so a run cut short by a disconnect still counts what it used (with no turn)."""
    usage = {k: int(usage.get(k) or 0) for k in USAGE_KEYS}
    cost = chatkit_cost(model=model, usage=usage) if any(usage.values()) else Decimal(0)
    with transaction.atomic():
        if turn is not None:
            chatkit_turn_record(conversation_id=conversation_id, **turn)
        if not any(usage.values()):
            return cost
        # Locks the conversation row only (`of`): locking its widget's row too would hold up the commit of
        # every new thread of the widget (its foreign keys are checked at commit) for this whole transaction;
        # with the monthly count in the same transaction as the thread rows that was a deadlock (found by
        # bench/chatkit_server.py on PostgreSQL).
        row = (
            Conversation.objects.select_for_update(of=("self",))
            .filter(pk=conversation_id)
            .values_list("usage", "widget__license_id")
            .first()
        )
        if row is None:
            return cost
        stored, license_id = row
        totals = dict(stored or {})
        for key, value in usage.items():
            totals[key] = int(totals.get(key, 0)) + value
        totals["model"] = model
        Conversation.objects.filter(pk=conversation_id).update(usage=totals, cost_usd=F("cost_usd") + cost)
        if counted:
            usage_increment(license=license_id, cost_usd=cost)
    return cost
