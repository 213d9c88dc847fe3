"""Voice access checks, concurrency slots, conversations, turns and usage (sync; the relay wraps them).

`voice_access` is the one check shared by the relay, `/api/realtime/client-secret` and the
WebRTC tool endpoint: license + Origin (fail closed), a published widget, voice enabled, monthly
voice minutes left. Concurrency is counted in the cache with one key per slot (`add` is atomic,
SET NX on Redis) and a TTL the live session keeps refreshing, so a crashed worker's slots free
themselves; with REDIS_URL the count is correct across processes.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from licenses.api import ApiError
from licenses.identity import identity_require_check, identity_token_read
from licenses.models import License
from licenses.selectors import license_check, license_get_public, license_quota_left
from licenses.services import usage_increment
from widgets.chat import visitor_page_url
from widgets.models import Channel, Conversation, Widget
from widgets.page_context import page_context_clean, page_context_for_agents
from widgets.selectors import widget_get_published
from widgets.services.turns import tool_turn_save, turns_save_new
from widgets.tools import ToolResult, tool_run

logger = logging.getLogger(__name__)

# A live call refreshes its slot every SLOT_REFRESH_SECONDS (realtime/relay.py); a crashed worker's slots
# free themselves after SLOT_TTL_SECONDS (issue 11, finding 5).
SLOT_TTL_SECONDS = 15
WORKER_LOST = "worker_lost"

# Close codes for refusals (browser sees them on the socket's close event).
CLOSE_CODES = {
    "unknown_license": 4404,
    "widget_not_found": 4404,
    "quota_exceeded": 4429,
    "too_many_sessions": 4429,
    "server_busy": 4503,
    "server_restart": 1012,
    "voice_disabled": 4403,
    "bad_request": 4400,
    # the configurator's test call (realtime/preview.py)
    "invalid_ticket": 4404,
    "preview_busy": 4429,
    "agency_preview_busy": 4429,
}
VOICE_MESSAGES = {
    "widget_not_found": "This license has no published widget with that id.",
    "voice_disabled": "Voice is not enabled for this widget.",
    "too_many_sessions": "Too many voice calls are running on this site right now. Please try again shortly.",
    "server_busy": "The voice service is busy right now. Please try again shortly.",
    "server_restart": "The voice service is restarting. Reconnecting…",
}
# Refusals that reject the WebSocket handshake outright: a foreign or broken site learns nothing more.
HANDSHAKE_REFUSALS = frozenset(
    {"unknown_license", "suspended", "revoked", "expired", "not_started", "domain_not_allowed", "origin_missing"}
)


@dataclass
class VoiceAccess:
    code: str
    message: str
    http_status: int
    license: License | None = None
    widget: Widget | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == "ok"

    @property
    def close_code(self) -> int:
        return CLOSE_CODES.get(self.code, 4403)


def voice_access(*, key: str, widget_public_id: str | None, origin: str | None) -> VoiceAccess:
    license = license_get_public(key=key)
    check = license_check(license=license, origin=origin, quota="voice_minutes")
    if not check.ok:
        return VoiceAccess(check.reason, check.message, check.http_status, license)
    return voice_access_widget(license=license, widget_public_id=widget_public_id)


def voice_access_widget(*, license: License, widget_public_id: str | None) -> VoiceAccess:
    widget = widget_get_published(license=license, public_id=widget_public_id or None)
    if widget is None:
        return VoiceAccess("widget_not_found", VOICE_MESSAGES["widget_not_found"], 404, license)
    config = widget.published_version.config
    if not (config.get("voice") or {}).get("enabled"):
        return VoiceAccess("voice_disabled", VOICE_MESSAGES["voice_disabled"], 403, license, widget, config)
    return VoiceAccess("ok", "", 200, license, widget, config)


def voice_refusal(code: str) -> VoiceAccess:
    return VoiceAccess(code, VOICE_MESSAGES[code], 429 if code == "too_many_sessions" else 503)


# --- concurrency slots -------------------------------------------------------------------------


def _slot_key(license_id: int, index: int) -> str:
    return f"switchboard:voice-slot:{license_id}:{index}"


def voice_slot_acquire(*, license: License, token: str, ttl: int = SLOT_TTL_SECONDS) -> str | None:
    """Take one of the license's `max_concurrent_voice_sessions` slots, or None if all are taken.

    `ttl`: how long the slot is held before its call must refresh it (longer for a LiveKit token, which
    the agent takes over only once the visitor joins)."""
    for index in range(license.max_concurrent_voice_sessions):
        key = _slot_key(license.pk, index)
        if cache.add(key, token, ttl):
            return key
    return None


def voice_slot_refresh(*, key: str, token: str, ttl: int = SLOT_TTL_SECONDS) -> None:
    """Keep a live call's slot. If it expired meanwhile (e.g. Redis was restarted), take it back when free."""
    if not cache.touch(key, ttl):
        cache.add(key, token, ttl)


def voice_slot_release(*, key: str, token: str) -> None:
    if cache.get(key) == token:
        cache.delete(key)


def voice_slots_in_use(*, license: License) -> int:
    keys = [_slot_key(license.pk, i) for i in range(license.max_concurrent_voice_sessions)]
    return len(cache.get_many(keys))


# --- conversations, turns, usage ----------------------------------------------------------------


@dataclass(frozen=True)
class VoiceContext:
    """Who calls from which page, as the server read it: `identity` from the signed token of
    Switchboard('identify') (`verified` is ours), `page_context` only when the widget sends page context,
    `page_url` for the inbox (our own record, as a chat keeps it)."""

    identity: dict[str, Any] = field(default_factory=dict)
    page_context: dict[str, Any] | None = None
    page_url: str = ""

    def session_kwargs(self) -> dict[str, Any]:
        """What realtime.session_config.session_config takes of it."""
        return {"identity": self.identity or None, "page_context": self.page_context}


def voice_context_read(
    *, license: License, config: dict[str, Any], identity_token: Any, page_context: Any
) -> VoiceContext:
    """The identity token and page context a call starts with (relay's `session.context`, the WebRTC and
    LiveKit endpoints' body), checked by the chat path's rules: a forged, expired or other license's token,
    or an unverified identity where the license requires verification, is refused (ApiError 403); a bad
    page context is refused (ApiError 400)."""
    if identity_token is not None and not isinstance(identity_token, str):
        raise ApiError("identity_invalid", "identity must be the token identify answered.", status_code=403)
    identity = identity_token_read(license=license, token=identity_token or "")
    identity_require_check(license=license, identity=identity)
    context = page_context_clean(page_context) if page_context not in (None, {}) else {}
    return VoiceContext(
        identity=identity.as_dict() if identity is not None else {},
        page_context=page_context_for_agents(context, config=config),
        page_url=visitor_page_url(context),
    )


def voice_conversation_start(
    *,
    widget: Widget,
    visitor_id: str,
    is_preview: bool = False,
    relayed: bool = False,
    context: VoiceContext | None = None,
) -> Conversation:
    """A relayed call (`relayed=True`) carries a heartbeat the reaper watches; a WebRTC call has none. A
    preview call (`is_preview`, the configurator's test call) counts no voice session against the license."""
    context = context or VoiceContext()
    with transaction.atomic():
        conversation = Conversation.objects.create(
            widget=widget,
            channel=Channel.VOICE,
            visitor_id=visitor_id[:128],
            session_id=uuid.uuid4().hex,
            is_preview=is_preview,
            heartbeat_at=timezone.now() if relayed else None,
            identity=context.identity,
            page_url=context.page_url,
        )
        if not is_preview:
            usage_increment(license=widget.license_id, voice_sessions=1)
    return conversation


def voice_quota_left_seconds(*, license_id: int) -> float:
    license = License.objects.filter(pk=license_id).first()
    if license is None:
        return 0.0
    return license_quota_left(license=license, kind="voice_minutes") * 60.0


def voice_usage_checkpoint(
    *,
    conversation_id: int,
    license_id: int,
    usage: dict[str, int],
    audio_in_seconds: float,
    audio_out_seconds: float,
    cost_usd: Decimal,
    end_reason: str = "",
) -> float:
    """Record a call's running totals on its conversation and bill the license the difference, in one
    transaction; with `end_reason`, also end the conversation. Returns the seconds newly billed.

    The relay calls it at every `response.done`, every heartbeat and at the end, so a killed worker loses
    at most what followed the last checkpoint. The bill is the difference against what the row already
    holds (row locked), so a checkpoint retried after a lost commit acknowledgement never bills twice, and
    the license's voice seconds always equal the sum of its conversations'. A conversation the reaper
    closed as `worker_lost` while its call was in fact alive (a long database outage) is taken back.
    A preview conversation (the configurator's test call) keeps its totals but bills nothing: 0.0."""
    now = timezone.now()
    seconds, out_seconds = round(audio_in_seconds, 3), round(audio_out_seconds, 3)
    with transaction.atomic():
        row = (
            Conversation.objects.select_for_update()
            .filter(Q(ended_at__isnull=True) | Q(end_reason=WORKER_LOST), pk=conversation_id)
            .values("audio_in_seconds", "cost_usd", "is_preview")
            .first()
        )
        if row is None:  # already ended for good
            return 0.0
        billed_seconds, billed_cost = row["audio_in_seconds"], row["cost_usd"]
        fields: dict[str, Any] = {
            "usage": usage,
            "audio_in_seconds": max(seconds, billed_seconds),
            "audio_out_seconds": out_seconds,
            "cost_usd": max(cost_usd, billed_cost),
            "heartbeat_at": now,
            "ended_at": now if end_reason else None,
            "end_reason": end_reason[:64],
        }
        Conversation.objects.filter(pk=conversation_id).update(**fields)
        if row["is_preview"]:
            return 0.0
        delta_seconds = max(seconds - billed_seconds, 0.0)
        delta_cost = max(cost_usd - billed_cost, Decimal(0))
        if delta_seconds or delta_cost:
            usage_increment(license=license_id, voice_seconds=delta_seconds, cost_usd=delta_cost)
    return delta_seconds


def voice_conversations_reap(*, stale_seconds: float, now: datetime | None = None) -> int:
    """End relayed voice calls whose heartbeat stopped (their worker died): `worker_lost`, ended when last
    seen. Their usage up to the last checkpoint is already on the row and billed. Returns how many."""
    cutoff = (now or timezone.now()) - timedelta(seconds=stale_seconds)
    return Conversation.objects.filter(channel=Channel.VOICE, ended_at__isnull=True, heartbeat_at__lt=cutoff).update(
        ended_at=F("heartbeat_at"), end_reason=WORKER_LOST
    )


# --- money -------------------------------------------------------------------------------------

USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "input_text_tokens",
    "input_audio_tokens",
    "input_cached_tokens",
    "input_cached_text_tokens",
    "input_cached_audio_tokens",
    "output_text_tokens",
    "output_audio_tokens",
)


def usage_add(total: dict[str, int], usage: dict[str, Any] | None) -> dict[str, int]:
    """Add one `response.done` usage block (GA shape) to the running totals."""
    usage = usage or {}
    ind = usage.get("input_token_details") or {}
    cached = ind.get("cached_tokens_details") or {}
    outd = usage.get("output_token_details") or {}
    parts = {
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "input_text_tokens": ind.get("text_tokens"),
        "input_audio_tokens": ind.get("audio_tokens"),
        "input_cached_tokens": ind.get("cached_tokens"),
        "input_cached_text_tokens": cached.get("text_tokens"),
        "input_cached_audio_tokens": cached.get("audio_tokens"),
        "output_text_tokens": outd.get("text_tokens"),
        "output_audio_tokens": outd.get("audio_tokens"),
    }
    out = {k: int(total.get(k, 0)) for k in USAGE_KEYS}
    for key, value in parts.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            out[key] += int(value)
    return out


def usage_cost(*, model: str, usage: dict[str, int]) -> Decimal:
    """Estimated USD from settings.REALTIME_PRICES (USD per 1M tokens)."""
    prices = settings.REALTIME_PRICES.get(model) or settings.REALTIME_PRICES.get(settings.REALTIME_DEFAULT_MODEL) or {}
    cached_text = usage.get("input_cached_text_tokens", 0)
    cached_audio = usage.get("input_cached_audio_tokens", 0)
    micro = (
        prices.get("text_in", 0) * max(usage.get("input_text_tokens", 0) - cached_text, 0)
        + prices.get("text_in_cached", 0) * cached_text
        + prices.get("audio_in", 0) * max(usage.get("input_audio_tokens", 0) - cached_audio, 0)
        + prices.get("audio_in_cached", 0) * cached_audio
        + prices.get("text_out", 0) * usage.get("output_text_tokens", 0)
        + prices.get("audio_out", 0) * usage.get("output_audio_tokens", 0)
    )
    return (Decimal(str(micro)) / Decimal(1_000_000)).quantize(Decimal("0.000001"))


# --- WebRTC calls: what the browser reports (realtime/views.py `call_record`) ------------------

# Why a browser may say its WebRTC call ended (anything else is refused as bad shape).
WEBRTC_END_REASONS = ("hangup", "browser_gone", "max_duration", "voice_minutes_exhausted", "upstream_closed")
WEBRTC_TURN_GRACE_SECONDS = 60.0  # turns still accepted this long after the server ended the call
# A WebRTC call's concurrency slot: taken with the key, kept by every report (every 15 s), freed by the call's
# end; a browser that vanished frees it after this long.
WEBRTC_SLOT_SECONDS = 60
WARN_MINUTES_SECONDS = 60.0
WARN_TIME_SECONDS = 30.0
# The most tokens a WebRTC call can have used per second of its time on our clock (each count is capped at
# rate x (seconds + slack)): a response re-reads at most the whole context (32k tokens) and nobody talks to
# the model more than once a second; output is bounded by speech (~20 audio tokens a second) far below
# 1,000. Far above any real call, so honest counts pass as reported, while a browser can no longer claim
# millions of tokens (thousands of dollars, past the usage columns' numeric(12,6)) for a short call.
WEBRTC_MAX_INPUT_TOKENS_PER_SECOND = 32_000
WEBRTC_MAX_OUTPUT_TOKENS_PER_SECOND = 1_000
WEBRTC_USAGE_SLACK_SECONDS = 30.0


@dataclass(frozen=True)
class CallRecord:
    saved: int  # turns newly stored
    end: str = ""  # the call must end now, for this reason ("" = go on)
    warning: str = ""  # a warning code for the visitor ("" = none)


def webrtc_call_live(conversation: Conversation) -> bool:
    """Open, or closed by the reaper while its browser was in fact alive (a checkpoint takes it back)."""
    return conversation.ended_at is None or conversation.end_reason == WORKER_LOST


def webrtc_call_record(
    *,
    conversation: Conversation,
    model: str,
    max_seconds: int,
    turns: list[dict[str, str]],
    usage: dict[str, Any] | None,
    end: str = "",
    slot: tuple[str, str] | None = None,
    now: datetime | None = None,
) -> CallRecord:
    """Store what a browser reports of its WebRTC call: turns (one Message each, deduplicated by item id,
    so a retried post stores nothing twice) and its cumulative token counts (GA `usage` shape, summed by
    the browser over its `response.done` events).

    Nothing the browser says is billed as is: the counts only ever grow (per-key maximum with what the row
    holds, so a replayed or reordered post changes nothing; each capped by `webrtc_usage_cap` at what the
    call's time allows), the cost is computed here from them with
    REALTIME_PRICES, and the call's billed seconds are OUR clock's time since the call started (capped at
    its maximum length). The license is billed the difference through `voice_usage_checkpoint`, as a relayed
    call. Returns whether the call must end (`max_duration`, `voice_minutes_exhausted`; the conversation is
    then ended here) and a warning when minutes or time run low.

    A call the server already ended still stores turns for `WEBRTC_TURN_GRACE_SECONDS` (the browser's last
    post after it hung up on our word) but bills nothing more. `slot` (key, token): the call's concurrency
    slot, kept while it goes on and freed when it ends."""
    now = now or timezone.now()
    saved = turns_save_new(conversation_id=conversation.pk, turns=turns)
    if not webrtc_call_live(conversation):
        _webrtc_slot(slot, keep=False)
        return CallRecord(saved=saved, end=conversation.end_reason or "hangup")
    elapsed = max((now - conversation.started_at).total_seconds(), 0.0)
    seconds = min(elapsed, float(max_seconds))
    reported = webrtc_usage_cap(usage_add({}, usage), seconds=seconds)
    stored = conversation.usage or {}
    merged = {key: max(int(stored.get(key, 0) or 0), reported[key]) for key in USAGE_KEYS}
    license_id = conversation.widget.license_id
    left = voice_quota_left_seconds(license_id=license_id) - max(seconds - conversation.audio_in_seconds, 0.0)
    if not end and elapsed >= max_seconds:
        end = "max_duration"
    elif not end and left <= 0:
        end = "voice_minutes_exhausted"
    voice_usage_checkpoint(
        conversation_id=conversation.pk,
        license_id=license_id,
        usage=merged,
        audio_in_seconds=seconds,
        audio_out_seconds=conversation.audio_out_seconds,
        cost_usd=usage_cost(model=model, usage=merged),
        end_reason=end,
    )
    _webrtc_slot(slot, keep=not end)
    if end:
        return CallRecord(saved=saved, end=end)
    warning = ""
    if left <= WARN_MINUTES_SECONDS:
        warning = "voice_minutes_low"
    elif max_seconds - elapsed <= min(WARN_TIME_SECONDS, max_seconds / 2):
        warning = "session_time_low"
    return CallRecord(saved=saved, warning=warning)


def webrtc_usage_cap(usage: dict[str, int], *, seconds: float) -> dict[str, int]:
    """A browser's cumulative token counts, each capped at what `seconds` of call time allows."""
    span = max(seconds, 0.0) + WEBRTC_USAGE_SLACK_SECONDS
    caps = {
        "input": int(span * WEBRTC_MAX_INPUT_TOKENS_PER_SECOND),
        "output": int(span * WEBRTC_MAX_OUTPUT_TOKENS_PER_SECOND),
    }
    return {key: min(value, caps[key.split("_", 1)[0]]) for key, value in usage.items()}


def voice_tool_run(
    *, widget: Widget, config: dict[str, Any], conversation_id: int | None, name: str, arguments: Any
) -> ToolResult:
    """A tool the model called during a call, on any transport (relay, WebRTC, LiveKit): run on the widget's
    own data (widgets.tools) and recorded as a tool turn on the call's conversation."""
    conversation = Conversation.objects.filter(pk=conversation_id).first() if conversation_id else None
    result = tool_run(
        name=name,
        widget=widget,
        conversation=conversation,
        arguments=arguments if isinstance(arguments, str | dict) else None,
        config=config,
    )
    if conversation is not None:
        tool_turn_save(conversation_id=conversation.pk, name=name, result=result)
    return result


def _webrtc_slot(slot: tuple[str, str] | None, *, keep: bool) -> None:
    """Refresh (or free) a WebRTC call's slot; a cache blip costs the report nothing (the slot's TTL ends it)."""
    if not slot:
        return
    key, token = slot
    try:
        if keep:
            voice_slot_refresh(key=key, token=token, ttl=WEBRTC_SLOT_SECONDS)
        else:
            voice_slot_release(key=key, token=token)
    except Exception:
        logger.warning("realtime: WebRTC slot %s failed", "refresh" if keep else "release", exc_info=True)
