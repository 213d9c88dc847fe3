"""LiveKit, the client side of our server: participant tokens and the agent's dispatch metadata.

`POST /api/livekit/token` (realtime/views.py) mints one participant token per call with
`livekit-api`: a room of its own per conversation, identity = the visitor, a short TTL, grants limited
to joining that room, publishing the microphone, subscribing and sending data, and a room
configuration that dispatches our agent (`python manage.py voice_agent`, agent name
`LIVEKIT_AGENT_NAME`) with metadata the server writes: license, widget, published version,
conversation and the concurrency slot the call holds, and who calls from which page as the server read
it (the verified-or-not identity and the page context, realtime.services.voice_context_read). Nothing in a
request reaches the metadata unchecked; the token is signed with `LIVEKIT_API_SECRET`, so the browser cannot
change it either.

The agent reads the metadata back with `dispatch_metadata_read` and trusts nothing else in the room.
UI events, transcripts and state reach the browser on the text-stream topic `EVENTS_TOPIC`, one JSON
event per stream in the relay's shapes (realtime/events.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from livekit import api

# Seconds a participant token may be used to join; a LiveKit connection refreshes its own token after.
TOKEN_TTL_SECONDS = 60
# The slot the token endpoint takes is held this long for the agent to take over (then refreshed by it).
SLOT_HOLD_SECONDS = TOKEN_TTL_SECONDS + 15
# The room closes this long after the visitor leaves, or if nobody joins it.
ROOM_EMPTY_TIMEOUT_SECONDS = 60
ROOM_DEPARTURE_TIMEOUT_SECONDS = 5
# The text-stream topic of our events (server -> browser), in the relay's JSON shapes.
EVENTS_TOPIC = "switchboard.voice"
# The one track source a visitor may publish.
VISITOR_SOURCES = ["microphone"]
METADATA_VERSION = 2  # 2: identity and page_context


def livekit_configured() -> bool:
    """True when LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are all set."""
    return bool(settings.LIVEKIT_URL and settings.LIVEKIT_API_KEY and settings.LIVEKIT_API_SECRET)


def room_name(*, session_id: str) -> str:
    return f"switchboard-{session_id}"


def visitor_identity(*, visitor_id: str, session_id: str) -> str:
    """The visitor's participant identity: their widget visitor id when it is a plain id, else one of ours."""
    clean = re.sub(r"[^A-Za-z0-9_-]", "", visitor_id)[:64]
    return "visitor-" + (clean or session_id[:16])


@dataclass(frozen=True)
class DispatchMetadata:
    """What the agent is told about its call, written by the server alone."""

    license: int
    widget: int
    version: int
    conversation: int
    room: str
    visitor: str
    slot: str
    slot_token: str
    identity: dict[str, Any] = field(default_factory=dict)  # licenses.identity.Identity.as_dict(), or {}
    page_context: dict[str, Any] = field(default_factory=dict)  # only when the widget sends page context
    v: int = METADATA_VERSION

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


_METADATA_TYPES = {
    "license": int,
    "widget": int,
    "version": int,
    "conversation": int,
    "room": str,
    "visitor": str,
    "slot": str,
    "slot_token": str,
    "identity": dict,
    "page_context": dict,
    "v": int,
}


def dispatch_metadata_read(text: str) -> DispatchMetadata | None:
    """The metadata of a dispatch, or None when it is not exactly ours (wrong keys, types or version)."""
    try:
        data = json.loads(text or "")
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) != set(_METADATA_TYPES):
        return None
    for key, kind in _METADATA_TYPES.items():
        if type(data[key]) is not kind:
            return None
    if data["v"] != METADATA_VERSION:
        return None
    return DispatchMetadata(**data)


def participant_token_create(*, metadata: DispatchMetadata) -> str:
    """A participant token for the visitor: this room only, mic + subscribe + data, our agent dispatched."""
    grants = api.VideoGrants(
        room_join=True,
        room=metadata.room,
        can_publish=True,
        can_publish_sources=list(VISITOR_SOURCES),
        can_subscribe=True,
        can_publish_data=True,
        can_update_own_metadata=False,
    )
    room_config = api.RoomConfiguration(
        name=metadata.room,
        empty_timeout=ROOM_EMPTY_TIMEOUT_SECONDS,
        departure_timeout=ROOM_DEPARTURE_TIMEOUT_SECONDS,
        max_participants=2,  # the visitor and our agent
        agents=[api.RoomAgentDispatch(agent_name=settings.LIVEKIT_AGENT_NAME, metadata=metadata.dumps())],
    )
    return (
        api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        .with_identity(metadata.visitor)
        .with_name("Visitor")
        .with_ttl(timedelta(seconds=TOKEN_TTL_SECONDS))
        .with_grants(grants)
        .with_room_config(room_config)
        .to_jwt()
    )


def event_payload(event: dict[str, Any]) -> str:
    """One event on the text stream: the relay's JSON, compact."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
