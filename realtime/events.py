"""Every message the relay sends to the browser, built here (typed events, plain JSON).

Browser protocol (server -> browser), see also static/widget/voice.js:

| type               | fields                                  | meaning                                         |
|--------------------|-----------------------------------------|-------------------------------------------------|
| session.ready      | max_session_seconds                     | upstream connected and configured; start the mic |
| audio.delta        | delta (base64 PCM16 24 kHz mono)        | assistant audio to queue for playback           |
| speech.started     |                                         | the visitor started talking: stop playback now  |
| speech.stopped     |                                         | the visitor stopped talking (thinking)          |
| response.started   |                                         | the assistant is preparing an answer            |
| response.done      | status                                  | the answer is finished                          |
| transcript.partial | role, text, item_id                     | the one live line for the turn being spoken     |
| transcript.final   | role, text, item_id                     | the finished turn: one bubble                   |
| tool.started       | name                                    | a server tool runs (thinking)                   |
| ui.event           | event (widgets/ui_events.py shape)      | product cards, trade-in form, demo, meeting     |
| lead.captured      | source                                  | a tool stored the visitor's details (the page's |
|                    |                                         | `lead` event; the Lead's source, nothing else)  |
| warning            | code, message                           | e.g. minutes or session time running out        |
| error              | code, message, fatal                    | refused input or a failure, in plain words      |
| session.ended      | reason, message                         | the call is over (the socket closes next);      |
|                    |                                         | reason server_restart (close 1012): reconnect   |

Browser -> server: only input_audio_buffer.append|commit|clear, response.cancel,
conversation.item.create (a user input_text message) and response.create without overrides; with
`&context=1`, first of all one session.context {identity, page_context} (realtime/consumers.py).
"""

from __future__ import annotations

from typing import Any

from licenses.api import json_compact

END_MESSAGES = {
    "hangup": "The call ended.",
    "browser_gone": "The visitor left.",
    "max_duration": "The call reached its maximum length.",
    "voice_minutes_exhausted": "This site has used its voice minutes for the month.",
    "upstream_closed": "The voice service closed the call.",
    "upstream_unavailable": "The voice service can't be reached right now. Please try again shortly.",
    "upstream_auth_failed": "The voice service isn't set up correctly for this site.",
    "upstream_rate_limited": "The voice service is busy right now. Please try again in a moment.",
    "upstream_insufficient_quota": "The voice service for this site is out of credit.",
    "upstream_not_configured": "Voice isn't set up for this site yet.",
    "server_error": "Something went wrong on our side.",
    "server_restart": "The voice service is restarting. Reconnecting…",  # the widget reconnects at once
    "worker_lost": "The call was cut off on our side.",  # recorded by the reaper; no browser hears it
}


def encode(event: dict[str, Any]) -> str:
    """One event as compact JSON text, for the browser or upstream (`licenses.api.json_compact`: every answer
    streams transcript deltas)."""
    return json_compact(event).decode()


def tool_events(result: Any) -> list[dict[str, Any]]:
    """What the browser hears of a tool's result (widgets.tools.ToolResult), on every transport."""
    out = [ui_event(result.ui_event)] if result.ui_event else []
    if result.lead_source:
        out.append(lead_captured(source=result.lead_source))
    return out


def lead_captured(*, source: str) -> dict[str, Any]:
    return {"type": "lead.captured", "source": source}


def session_ready(*, max_session_seconds: int) -> dict[str, Any]:
    return {"type": "session.ready", "max_session_seconds": max_session_seconds}


def audio_delta(delta: str) -> dict[str, Any]:
    return {"type": "audio.delta", "delta": delta}


def speech_started() -> dict[str, Any]:
    return {"type": "speech.started"}


def speech_stopped() -> dict[str, Any]:
    return {"type": "speech.stopped"}


def response_started() -> dict[str, Any]:
    return {"type": "response.started"}


def response_done(*, status: str = "completed") -> dict[str, Any]:
    return {"type": "response.done", "status": status}


def transcript_partial(*, role: str, text: str, item_id: str = "") -> dict[str, Any]:
    return {"type": "transcript.partial", "role": role, "text": text, "item_id": item_id}


def transcript_final(*, role: str, text: str, item_id: str = "") -> dict[str, Any]:
    return {"type": "transcript.final", "role": role, "text": text, "item_id": item_id}


def tool_started(*, name: str) -> dict[str, Any]:
    return {"type": "tool.started", "name": name}


def ui_event(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "ui.event", "event": event}


def warning(*, code: str, message: str) -> dict[str, Any]:
    return {"type": "warning", "code": code, "message": message}


def error(*, code: str, message: str, fatal: bool = False) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "fatal": fatal}


def session_ended(*, reason: str) -> dict[str, Any]:
    return {"type": "session.ended", "reason": reason, "message": END_MESSAGES.get(reason, "The call ended.")}
