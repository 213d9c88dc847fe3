"""Rules of the public n8n chat: request validation, rate limit, quota, and the record of each turn."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from config.api import ApiError, json_loads
from licenses.models import License
from licenses.selectors import license_quota_left
from licenses.services import usage_increment
from widgets.models import Channel, Conversation, Message, Widget
from widgets.n8n import N8nReply, N8nStream, N8nTarget, n8n_history, n8n_send, n8n_target
from widgets.selectors import widget_get_published

MAX_CHAT_INPUT = 4000
MAX_SESSION_ID = 200
MAX_METADATA_BYTES = 4000
ACTIONS = ("sendMessage", "loadPreviousSession")


@dataclass(frozen=True)
class ChatRequest:
    action: str
    session_id: str
    chat_input: str
    metadata: dict[str, Any]
    visitor_id: str
    widget_id: str


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def chat_request_parse(*, body: bytes, widget_param: str = "", visitor_header: str = "") -> ChatRequest:
    """Validate the widget's body: {action, sessionId, chatInput, metadata?, widget?}. Raises ApiError (400)."""
    data = json_loads(body or b"")
    if not isinstance(data, dict):
        raise ApiError("invalid_json", "Send a JSON object.")
    action = data.get("action", "sendMessage")
    if action not in ACTIONS:
        raise ApiError("invalid_action", "action must be sendMessage or loadPreviousSession.")
    session_id = _str(data.get("sessionId"))
    if not session_id or len(session_id) > MAX_SESSION_ID:
        raise ApiError("invalid_session_id", f"sessionId is required (at most {MAX_SESSION_ID} characters).")
    chat_input = data.get("chatInput") if isinstance(data.get("chatInput"), str) else ""
    if action == "sendMessage":
        if not chat_input.strip():
            raise ApiError("empty_message", "chatInput must not be empty.")
        if len(chat_input) > MAX_CHAT_INPUT:
            raise ApiError("message_too_long", f"chatInput is limited to {MAX_CHAT_INPUT} characters.")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict) or len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise ApiError("invalid_metadata", f"metadata must be an object under {MAX_METADATA_BYTES} bytes.")
    visitor_id = (visitor_header or _str(metadata.get("visitorId")))[:128]
    widget_id = (widget_param or _str(data.get("widget")))[:40]
    return ChatRequest(action, session_id, chat_input, metadata, visitor_id, widget_id)


def chat_rate_check(*, license: License, visitor_id: str, session_id: str, ip: str) -> int | None:
    """Count one request of this visitor (or session) from this IP; seconds to wait when over the limit."""
    limit = settings.WIDGET_CHAT_RATE_PER_MINUTE
    now = time.time()
    window = int(now // 60)
    who = hashlib.sha256(f"{visitor_id or session_id}|{ip}".encode()).hexdigest()[:24]
    key = f"sb:rate:chat:{license.pk}:{who}:{window}"
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=120)
        count = 1
    if count > limit:
        return max(1, int(60 - (now % 60)))
    return None


def chat_conversation_find(*, widget: Widget, session_id: str) -> Conversation | None:
    return (
        Conversation.objects.filter(widget=widget, channel=Channel.CHAT, session_id=session_id, is_preview=False)
        .order_by("started_at", "id")
        .first()
    )


def chat_quota_check(*, widget: Widget, session_id: str) -> None:
    """A new conversation needs monthly quota; existing ones may continue. Raises ApiError 429."""
    if chat_conversation_find(widget=widget, session_id=session_id) is not None:
        return
    if license_quota_left(license=widget.license, kind="conversations") <= 0:
        raise ApiError("quota_exceeded", "This license has used its monthly allowance.", status_code=429)


def chat_turn_record(
    *, widget: Widget, session_id: str, visitor_id: str, user_text: str, reply_text: str,
    ui: list[dict[str, Any]] | None = None,
) -> Conversation:
    """One user message and one assistant message; a new session opens a conversation and counts it."""
    with transaction.atomic():
        conversation = chat_conversation_find(widget=widget, session_id=session_id)
        if conversation is None:
            conversation = Conversation.objects.create(
                widget=widget, channel=Channel.CHAT, session_id=session_id, visitor_id=visitor_id
            )
            usage_increment(license=widget.license_id, conversations=1)
        Message.objects.create(conversation=conversation, role=Message.Role.USER, text=user_text)
        Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, text=reply_text,
            payload={"ui": ui} if ui else {},
        )
    return conversation


def published_widget_or_404(*, license: License, public_id: str = "") -> Widget:
    widget = widget_get_published(license=license, public_id=public_id[:40] or None)
    if widget is None:
        raise ApiError("widget_not_found", "This widget does not exist or is not published.", status_code=404)
    return widget


def rate_limit_or_429(*, license: License, visitor_id: str, session_id: str, ip: str) -> None:
    retry_after = chat_rate_check(license=license, visitor_id=visitor_id, session_id=session_id, ip=ip)
    if retry_after:
        raise ApiError("rate_limited", "Too many messages; wait a moment and try again.", status_code=429,
                       fields={"retry_after": retry_after})


def chat_prepare(*, license: License, chat: ChatRequest, ip: str) -> tuple[Widget, N8nTarget]:
    """Every rule before n8n is called: widget, type, webhook, rate limit, quota. Raises ApiError."""
    widget = published_widget_or_404(license=license, public_id=chat.widget_id)
    version = widget.published_version
    if version.widget_type != "n8n":
        raise ApiError("wrong_widget_type", "This widget does not use the n8n chat.", status_code=400)
    target = n8n_target(config=version.config, secrets=widget.secrets)
    if target is None:
        raise ApiError("not_configured", "This widget's chat is not connected yet.", status_code=503)
    rate_limit_or_429(license=license, visitor_id=chat.visitor_id, session_id=chat.session_id, ip=ip)
    if chat.action == "sendMessage":
        chat_quota_check(widget=widget, session_id=chat.session_id)
    return widget, target


def chat_is_streaming(*, widget: Widget) -> bool:
    return bool(widget.published_version.config["connection"]["n8n"].get("streaming"))


def chat_history(*, target: N8nTarget, chat: ChatRequest) -> list[dict[str, str]]:
    return n8n_history(target=target, session_id=chat.session_id, metadata=chat.metadata)


def chat_reply(*, widget: Widget, target: N8nTarget, chat: ChatRequest) -> N8nReply:
    """One non-streaming turn: ask n8n, then record it (nothing is written when n8n fails)."""
    reply = n8n_send(target=target, session_id=chat.session_id, chat_input=chat.chat_input, metadata=chat.metadata)
    chat_turn_record(widget=widget, session_id=chat.session_id, visitor_id=chat.visitor_id,
                     user_text=chat.chat_input, reply_text=reply.text, ui=reply.ui)
    return reply


def chat_stream(*, widget: Widget, target: N8nTarget, chat: ChatRequest) -> Iterator[bytes]:
    """Open the upstream stream now (errors raise N8nError before any byte is sent), then yield NDJSON
    lines as they arrive; the aggregated turn is recorded once, before the final `end` line."""
    stream = N8nStream(target=target, session_id=chat.session_id, chat_input=chat.chat_input,
                       metadata=chat.metadata)

    def lines() -> Iterator[bytes]:
        for event in stream.events():
            if event["type"] == "end":
                chat_turn_record(widget=widget, session_id=chat.session_id, visitor_id=chat.visitor_id,
                                 user_text=chat.chat_input, reply_text=stream.text, ui=stream.ui)
            yield (json.dumps(event, separators=(",", ":")) + "\n").encode()

    return lines()
