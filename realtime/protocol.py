"""The relay's wire rules, pure and testable: what a browser may send upstream, the upstream event
names of both API generations, the hot-path fast paths and a token bucket for rate caps."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from realtime import events
from realtime.session_config import SAMPLE_RATE

BYTES_PER_SECOND = SAMPLE_RATE * 2  # PCM16 mono
MAX_FRAME_BYTES = 256 * 1024
# A call's rate caps (realtime.relay): messages from the browser, and audio against real time. The widget sends one
# append per FRAME_MS of audio (static/widget/voice.js), far inside both (realtime/tests/test_hot_path.py).
FRAMES_PER_SECOND, FRAMES_BURST = 100, 200
AUDIO_BYTES_PER_SECOND, AUDIO_BURST_BYTES = 2 * BYTES_PER_SECOND, 10 * BYTES_PER_SECOND
MAX_TEXT_CHARS = 4000

AUDIO_DELTA = frozenset({"response.output_audio.delta", "response.audio.delta"})
ASSISTANT_DELTA = frozenset(
    {
        "response.output_audio_transcript.delta",
        "response.audio_transcript.delta",
        "response.output_text.delta",
        "response.text.delta",
    }
)
ASSISTANT_DONE = frozenset(
    {
        "response.output_audio_transcript.done",
        "response.audio_transcript.done",
        "response.output_text.done",
        "response.text.done",
    }
)
USER_DELTA = "conversation.item.input_audio_transcription.delta"
USER_DONE = "conversation.item.input_audio_transcription.completed"
FATAL_UPSTREAM_CODES = {
    "insufficient_quota": "upstream_insufficient_quota",
    "invalid_api_key": "upstream_auth_failed",
    "session_expired": "upstream_closed",
}
UPSTREAM_ERROR_WORDS = {
    "rate_limit_exceeded": "The voice service is busy right now. Please try again in a moment.",
    "conversation_already_has_active_response": "Still answering the last question.",
}


_B64_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def b64_alphabet_only(data: str) -> bool:
    """True if every character is in the base64 alphabet (so the string needs no JSON escaping).

    The same test as `set(alphabet).issuperset(data)`, in C: ~2 µs for a 20 ms frame instead of ~25 µs, and the
    relay runs it on every frame in both directions (py-spy, bench/README-relay.md)."""
    return data.isascii() and not data.encode("ascii").translate(None, _B64_BYTES)


def b64_decoded_len(data: str) -> int:
    """Bytes in a base64 string, without decoding it."""
    n = len(data)
    return n * 3 // 4 - (2 if data.endswith("==") else 1 if data.endswith("=") else 0)


_DELTA_KEY = '"delta":"'


def audio_delta_fast_path(raw: str) -> str | None:
    """The base64 audio of an upstream audio delta (GA or beta name), found without parsing the JSON."""
    head = raw[:200]
    if '"response.output_audio.delta"' not in head and '"response.audio.delta"' not in head:
        return None
    start = raw.find(_DELTA_KEY)
    if start < 0:
        return None
    start += len(_DELTA_KEY)
    end = raw.find('"', start)
    delta = raw[start:end] if end > 0 else ""
    return delta if delta and b64_alphabet_only(delta) else None


@dataclass(frozen=True)
class Filtered:
    upstream: dict[str, Any] | str | None = None  # the event to forward, rebuilt from allowed fields only
    error: dict[str, Any] | None = None  # a typed error event for the browser
    audio_bytes: int = 0
    user_text: str = ""


def _refuse(code: str, message: str) -> Filtered:
    return Filtered(error=events.error(code=code, message=message))


_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'


def append_fast_path(raw: str) -> int:
    """Audio bytes if `raw` is exactly the canonical append event (voice.js sends that), else -1.

    The hot path: ~50 frames/s per call are forwarded as they came, without a JSON round trip."""
    if not raw.startswith(_APPEND_HEAD) or not raw.endswith('"}') or len(raw) > MAX_FRAME_BYTES:
        return -1
    audio = raw[len(_APPEND_HEAD) : -2]
    if not audio or len(audio) % 4 or not b64_alphabet_only(audio):
        return -1
    return b64_decoded_len(audio)


def browser_event_filter(raw: str | bytes | None) -> Filtered:
    """Allow only what a visitor's browser may ask of the session; everything else is refused."""
    if isinstance(raw, str) and (size := append_fast_path(raw)) >= 0:
        return Filtered(raw, audio_bytes=size)
    if raw is None or isinstance(raw, bytes):
        return _refuse("invalid_event", "Send JSON text events.")
    if len(raw) > MAX_FRAME_BYTES:
        return _refuse("frame_too_large", f"Frames are limited to {MAX_FRAME_BYTES // 1024} KB.")
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
        return _refuse("invalid_event", "That was not valid JSON.")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return _refuse("invalid_event", "Every event needs a type.")
    kind = event["type"]
    if kind == "input_audio_buffer.append":
        audio = event.get("audio")
        if not isinstance(audio, str) or not audio or len(audio) % 4 or not b64_alphabet_only(audio):
            return _refuse("invalid_audio", "audio must be base64 PCM16 (24 kHz mono).")
        return Filtered({"type": kind, "audio": audio}, audio_bytes=b64_decoded_len(audio))
    if kind in ("input_audio_buffer.commit", "input_audio_buffer.clear", "response.cancel"):
        return Filtered({"type": kind})
    if kind == "response.create":
        if event.get("response"):
            return _refuse("event_not_allowed", "response.create may not override the session.")
        return Filtered({"type": kind})
    if kind == "conversation.item.create":
        item = event.get("item") if isinstance(event.get("item"), dict) else {}
        content = item.get("content") if isinstance(item.get("content"), list) else []
        texts = [c.get("text") for c in content if isinstance(c, dict) and c.get("type") == "input_text"]
        if (
            item.get("type", "message") != "message"
            or item.get("role") != "user"
            or len(content) != 1
            or len(texts) != 1
            or not isinstance(texts[0], str)
            or not texts[0].strip()
        ):
            return _refuse("event_not_allowed", "Only a user text message may be added.")
        text = texts[0].strip()[:MAX_TEXT_CHARS]
        return Filtered(
            {
                "type": kind,
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
            },
            user_text=text,
        )
    return _refuse("event_not_allowed", f"{kind[:60]} is not allowed from the browser.")


class TokenBucket:
    def __init__(self, rate: float, capacity: float):
        self.rate, self.capacity, self.tokens, self.stamp = rate, capacity, capacity, time.monotonic()

    def take(self, amount: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True
