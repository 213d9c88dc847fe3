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
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from chatkit.client import ChatKitError
from licenses.models import License
from licenses.selectors import REASON_MESSAGES, usage_for_month
from licenses.services import usage_increment
from widgets.models import Conversation
from widgets.ratelimit import rate_hit
from widgets.services.turns import chatkit_turn_record

# --- server mode: limits, the monthly cap, turns and usage -----------------------------------


def chatkit_rate_check(*, license: License, owner: str, generates: bool) -> int | None:
    """Per visitor and per license: model calls (`generates`) per minute, and every request per visitor
    (the shared limiter, widgets/ratelimit.py). Seconds to wait when over a limit, else None."""
    visitor = hashlib.sha256(owner.encode()).hexdigest()[:24]
    checks = (
        (
            (f"chatkit:visitor:{license.pk}:{visitor}", settings.CHATKIT_VISITOR_RATE_PER_MINUTE),
            (f"chatkit:license:{license.pk}", settings.CHATKIT_LICENSE_RATE_PER_MINUTE),
        )
        if generates
        else ((f"chatkit:reads:{license.pk}:{visitor}", settings.CHATKIT_READ_RATE_PER_MINUTE),)
    )
    for key, limit in checks:
        count, left = rate_hit(key)
        if count > limit:
            return left
    return None


def chatkit_thread_reserve(*, license: License) -> None:
    """Count a new public ChatKit thread against the monthly cap, before anything streams. Raises 429.

    Exact under concurrency: the atomic increment locks the month's row until commit, so concurrent
    threads serialise and each sees its own total; one over the cap rolls its increment back."""
    with transaction.atomic():
        usage_increment(license=license, chatkit_sessions=1)
        usage = usage_for_month(license=license)
        assert usage is not None
        if usage.conversations + usage.chatkit_sessions > license.monthly_conversations:
            raise ChatKitError("quota_exceeded", REASON_MESSAGES["quota_exceeded"], 429)


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
        conversation = (
            Conversation.objects.select_for_update().select_related("widget").filter(pk=conversation_id).first()
        )
        if conversation is None:
            return cost
        totals = dict(conversation.usage or {})
        for key, value in usage.items():
            totals[key] = int(totals.get(key, 0)) + value
        totals["model"] = model
        conversation.usage = totals
        conversation.save(update_fields=["usage"])
        Conversation.objects.filter(pk=conversation_id).update(cost_usd=F("cost_usd") + cost)
        if counted:
            usage_increment(license=conversation.widget.license_id, cost_usd=cost)
    return cost
