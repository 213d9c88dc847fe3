"""Voice in the configurator preview: a test call on the UNSAVED draft, by a signed-in member (issue 14.3).

1. `POST /app/widgets/<public_id>/voice-preview/` {config} (realtime/views.py `voice_preview_ticket`): the
   member's session + CSRF, the one access check (`widget_get_for_user`; another agency's widget is 404), the
   draft merged over the saved one and validated by the schema exactly as `preview-config` does, the member's
   ticket rate. The draft snapshot is stored server-side in the cache under a random ticket (60 s, one use),
   bound to the member and the widget; the answer names the WebSocket path.
2. `WS /ws/realtime/preview/<ticket>/` (realtime/consumers.py `RealtimePreviewConsumer`): same-origin
   Origin, the session's user is the ticket's and still a member, the ticket is taken atomically (a replay
   finds nothing), the license may serve, then a preview slot per member and per agency. The relay then runs
   as for a visitor, on `session_config(config=<the draft>)` — the ONE session builder.

Never counted: the conversation is written flagged `is_preview` (so tools and turns work, and the inbox,
analytics, alerts and the widget list leave it out), no voice session or second is billed to the license
(`realtime.services` skips billing for preview rows), no concurrency slot of the license is taken and the
license's minutes neither limit nor warn. The call is capped instead: `REALTIME_PREVIEW_MAX_SECONDS` long,
`REALTIME_PREVIEW_MAX_PER_MEMBER` / `REALTIME_PREVIEW_MAX_PER_AGENCY` at once, and
`REALTIME_PREVIEW_TICKETS_PER_MINUTE` tickets per member. Only the draft's behaviour comes from the browser:
the license, the OpenAI key, prices and limits are the server's.

Every draft is tried over the relay, whatever its `voice.transport`: WebRTC and LiveKit need real
credentials in the browser (an ephemeral OpenAI key, a LiveKit room and agent) for a session built from an
unsaved config; the relay runs the same session, tools and turns, and the preview's mark says so.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache

from licenses.api import ApiError
from licenses.selectors import license_status_reason
from widgets.config_schema import config_draft
from widgets.models import Widget
from widgets.ratelimit import rate_hit

TICKET_SECONDS = 60
PREVIEW_MESSAGES = {
    "invalid_ticket": "This test call link is unknown, used or expired. Click the microphone again.",
    "preview_busy": "You have too many test calls open. End one and try again.",
    "agency_preview_busy": "Your agency has too many test calls open right now. Try again shortly.",
}


def _ticket_key(ticket: str) -> str:
    return f"switchboard:voice-preview-ticket:{ticket}"


@dataclass(frozen=True)
class PreviewTicket:
    user_id: int
    widget_id: int
    public_id: str
    agency_id: int
    config: dict[str, Any]


def license_not_serving_message(reason: str) -> str:
    return f"This widget's license is {reason.replace('_', ' ')}: it makes no calls, test calls included."


def voice_preview_draft(*, widget: Widget, draft: Any) -> dict[str, Any]:
    """The draft as the preview frame sends it, merged over the saved draft and validated like a save
    (the `preview-config` rule). Raises ApiError 400 (invalid) or 409 (voice off in the draft)."""
    config = config_draft(draft, base=widget.config)
    if not config["voice"]["enabled"]:
        raise ApiError("voice_disabled", "Voice is off in this draft: switch it on in the Voice tab.", status_code=409)
    return config


def voice_preview_ticket_create(*, widget: Widget, user_id: int, draft: Any) -> tuple[str, dict[str, Any]]:
    """Validate the draft and store it under a new one-use ticket for this member and widget.
    Returns (ticket, config). Raises ApiError (400/409 draft, 409 license not serving, 429 rate)."""
    reason = license_status_reason(license=widget.license)
    if reason != "ok":
        raise ApiError("license_not_serving", license_not_serving_message(reason), status_code=409)
    config = voice_preview_draft(widget=widget, draft=draft)
    count, retry_after = rate_hit(f"voice-preview:{user_id}", window=60)
    if count > settings.REALTIME_PREVIEW_TICKETS_PER_MINUTE:
        raise ApiError(
            "rate_limited",
            "Too many test calls in a minute; wait a moment and try again.",
            status_code=429,
            fields={"retry_after": retry_after},
        )
    ticket = secrets.token_urlsafe(24)
    snapshot = {"u": user_id, "w": widget.pk, "p": widget.public_id, "a": widget.license.agency_id, "c": config}
    cache.set(_ticket_key(ticket), snapshot, TICKET_SECONDS)
    return ticket, config


def voice_preview_ticket_take(*, ticket: str, user_id: int) -> PreviewTicket | None:
    """The ticket's snapshot, once, for the member it was minted for: whoever deletes the key first owns it
    (a replay, or a second socket racing the first, gets None). Unknown and expired tickets, and another
    user's (left in place: someone else cannot burn it), are None too."""
    if not ticket or len(ticket) > 64:
        return None
    key = _ticket_key(ticket)
    snapshot = cache.get(key)
    if not isinstance(snapshot, dict) or snapshot.get("u") != user_id or not cache.delete(key):
        return None
    return PreviewTicket(
        user_id=snapshot["u"],
        widget_id=snapshot["w"],
        public_id=snapshot["p"],
        agency_id=snapshot["a"],
        config=snapshot["c"],
    )


def voice_preview_max_seconds(config: dict[str, Any]) -> int:
    voice = config.get("voice") or {}
    return min(
        int(voice.get("max_session_seconds", 900)),
        settings.REALTIME_PREVIEW_MAX_SECONDS,
        settings.REALTIME_MAX_SESSION_SECONDS,
    )


# --- who may open the socket ---------------------------------------------------------------------------


def same_origin(*, origin: str | None, host: str | None) -> bool:
    """The preview socket carries the member's session cookie, so it must come from our own pages: the
    Origin's host:port is the Host the socket was opened on (fails closed without either)."""
    if not origin or not host:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc.lower() == host.lower()


# --- caps: preview slots per member and per agency -------------------------------------------------------


def _slot_keys(kind: str, owner: int, limit: int) -> list[str]:
    return [f"switchboard:voice-preview-slot:{kind}:{owner}:{i}" for i in range(limit)]


def voice_preview_slots_acquire(*, user_id: int, agency_id: int, token: str, ttl: int) -> tuple[list[str], str]:
    """One of the member's and one of the agency's preview slots (cache keys with a TTL the live call
    refreshes, as the license's voice slots). Returns (keys, "") or ([], refusal code)."""
    taken: list[str] = []
    for kind, owner, limit, code in (
        ("member", user_id, settings.REALTIME_PREVIEW_MAX_PER_MEMBER, "preview_busy"),
        ("agency", agency_id, settings.REALTIME_PREVIEW_MAX_PER_AGENCY, "agency_preview_busy"),
    ):
        key = next((k for k in _slot_keys(kind, owner, limit) if cache.add(k, token, ttl)), None)
        if key is None:
            for done in taken:
                if cache.get(done) == token:
                    cache.delete(done)
            return [], code
        taken.append(key)
    return taken, ""


def voice_preview_slots_in_use(*, kind: str, owner: int) -> int:
    limit = settings.REALTIME_PREVIEW_MAX_PER_MEMBER if kind == "member" else settings.REALTIME_PREVIEW_MAX_PER_AGENCY
    return len(cache.get_many(_slot_keys(kind, owner, limit)))
