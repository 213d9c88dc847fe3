"""One LiveKit voice call as the agent sees it, in plain synchronous functions (no livekit import).

`python manage.py voice_agent` (realtime/voice_agent.py) wires these to livekit-agents; everything that
decides something lives here so it is tested directly (realtime/tests/test_livekit_call.py):
- `LiveKitCall.open` trusts only the dispatch metadata the token endpoint wrote (realtime/livekit.py) and
  re-checks the call against the database: the conversation is open and belongs to that widget and
  license, the room is the conversation's, the license may still serve, voice is on, minutes are left;
- the session comes from the ONE builder, `realtime.session_config.session_config`, on the published
  version named in the metadata; `realtime_model_options` maps it onto the OpenAI Realtime plugin;
- tools run through `widgets.tools.tool_run` as on the relay (one `tool` message per call with its UI
  events) and answer the browser with the relay's events (`tool.started`, `ui.event`);
- transcripts are turns (one `Message` per finished user/assistant turn, `transcript.partial` /
  `transcript.final` events); usage is the relay's token totals (from the SDK's running usage), billed
  with the same idempotent checkpoint (`services.voice_usage_checkpoint`), the call's seconds counted
  from when it started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from licenses.selectors import license_status_reason
from realtime import events
from realtime import services as svc
from realtime.livekit import DispatchMetadata, dispatch_metadata_read, room_name
from realtime.session_config import session_config
from widgets.models import Channel, Conversation, Widget, WidgetVersion
from widgets.services.turns import turn_save

HEARTBEAT_SECONDS = 15.0  # checkpoint + heartbeat the reaper watches, as the relay
SLOT_REFRESH_SECONDS = 5.0
WARN_BEFORE_SECONDS = 30.0


class CallRefused(Exception):
    """The dispatch does not name a call this agent may serve; `code` is the reason (logged, and told to
    the browser as a fatal `error` + `session.ended` when the room can still hear it)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class LiveKitCall:
    metadata: DispatchMetadata
    widget: Widget
    config: dict[str, Any]
    conversation_id: int
    max_seconds: int
    quota_left_seconds: float
    session: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=lambda: svc.usage_add({}, None))
    started: float = field(default_factory=time.monotonic)
    billed_seconds: float = 0.0  # seconds billed by the last checkpoint
    speaking_since: float | None = None
    audio_out_seconds: float = 0.0
    user_speaking: bool = False
    warned: set[str] = field(default_factory=set)
    ended: bool = False

    # --- opening --------------------------------------------------------------------------------

    @classmethod
    def open(cls, *, metadata_text: str, room: str) -> LiveKitCall:
        """The call this dispatch names, checked against the database (sync: run it in a thread)."""
        metadata = dispatch_metadata_read(metadata_text)
        if metadata is None:
            raise CallRefused("bad_metadata")
        if metadata.room != room:
            raise CallRefused("wrong_room")
        conversation = (
            Conversation.objects.select_related("widget", "widget__license")
            .filter(
                pk=metadata.conversation,
                widget_id=metadata.widget,
                widget__license_id=metadata.license,
                channel=Channel.VOICE,
                ended_at__isnull=True,
            )
            .first()
        )
        if conversation is None or room_name(session_id=conversation.session_id.removeprefix("livekit-")) != room:
            raise CallRefused("unknown_call")
        version = WidgetVersion.objects.filter(pk=metadata.version, widget_id=metadata.widget).first()
        if version is None:
            raise CallRefused("unknown_call")
        license = conversation.widget.license
        config = version.config
        quota_left = svc.voice_quota_left_seconds(license_id=license.pk)
        refusal = (
            "license_inactive"
            if license_status_reason(license=license) != "ok"
            else "voice_disabled"
            if not (config.get("voice") or {}).get("enabled")
            else "quota_exceeded"
            if quota_left <= 0
            else ""
        )
        if refusal:  # a real call that may not go on: closed now, its slot freed (not left to the reaper)
            svc.voice_usage_checkpoint(
                conversation_id=conversation.pk,
                license_id=license.pk,
                usage={},
                audio_in_seconds=0.0,
                audio_out_seconds=0.0,
                cost_usd=Decimal(0),
                end_reason=refusal,
            )
            svc.voice_slot_release(key=metadata.slot, token=metadata.slot_token)
            raise CallRefused(refusal)
        voice = config["voice"]
        call = cls(
            metadata=metadata,
            widget=conversation.widget,
            config=config,
            conversation_id=conversation.pk,
            max_seconds=min(int(voice.get("max_session_seconds", 900)), settings.REALTIME_MAX_SESSION_SECONDS),
            quota_left_seconds=quota_left,
        )
        call.session = session_config(
            config=config,
            widget=conversation.widget,
            identity=metadata.identity or None,
            page_context=metadata.page_context or None,
        )
        return call

    def ready_events(self) -> list[dict[str, Any]]:
        return [events.session_ready(max_session_seconds=self.max_seconds)]

    # --- tools ----------------------------------------------------------------------------------

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The session's tools as raw function schemas (name, description, parameters)."""
        return [{k: t[k] for k in ("name", "description", "parameters")} for t in self.session["tools"]]

    def tool(self, name: str, arguments: Any) -> tuple[str, list[dict[str, Any]]]:
        """Run a tool as the relay does; returns the output for the model and the events for the browser."""
        result = svc.voice_tool_run(
            widget=self.widget, config=self.config, conversation_id=self.conversation_id, name=name, arguments=arguments
        )
        return result.output(), events.tool_events(result)

    # --- states and transcripts -----------------------------------------------------------------

    def user_state(self, state: str) -> list[dict[str, Any]]:
        if state == "speaking" and not self.user_speaking:
            self.user_speaking = True
            return [events.speech_started()]
        if state != "speaking" and self.user_speaking:
            self.user_speaking = False
            return [events.speech_stopped()]
        return []

    def agent_state(self, old: str, new: str, *, now: float | None = None) -> list[dict[str, Any]]:
        now = time.monotonic() if now is None else now
        if old == "speaking" and self.speaking_since is not None:
            self.audio_out_seconds += now - self.speaking_since
            self.speaking_since = None
        if new == "speaking":
            self.speaking_since = now
        if new == "thinking":
            return [events.response_started()]
        if new == "listening" and old in ("thinking", "speaking"):
            return [events.response_done()]
        return []

    def user_transcript(self, text: str, *, final: bool, item_id: str = "") -> list[dict[str, Any]]:
        """A live line while the visitor speaks; the finished turn arrives as a conversation item."""
        if final or not text.strip():
            return []
        return [events.transcript_partial(role="user", text=text, item_id=item_id)]

    def assistant_transcript(self, said: str) -> list[dict[str, Any]]:
        """The assistant's words so far while it answers (the relay's live line, from the model's transcript
        deltas); the finished turn arrives as a conversation item."""
        if not said.strip():
            return []
        return [events.transcript_partial(role="assistant", text=said)]

    def turn(self, role: str, text: str, *, item_id: str = "", interrupted: bool = False) -> list[dict[str, Any]]:
        """A finished user or assistant turn: one message row, one bubble."""
        text = text.strip()
        if role not in ("user", "assistant") or not text:
            return []
        turn_save(conversation_id=self.conversation_id, role=role, text=text, item_id=item_id)
        return [events.transcript_final(role=role, text=text, item_id=item_id)]

    # --- usage, limits and the end --------------------------------------------------------------

    def usage_totals(self, model_usage: list[dict[str, Any]]) -> bool:
        """Take the session's running usage (livekit-agents' `session_usage_updated`: totals per model, the
        LLM entries named as our USAGE_KEYS). Returns True when the totals changed (time to checkpoint)."""
        totals = dict.fromkeys(svc.USAGE_KEYS, 0)
        for entry in model_usage:
            if entry.get("type") != "llm_usage":
                continue
            for key in svc.USAGE_KEYS:
                value = entry.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    totals[key] += value
        changed = totals != self.usage
        self.usage = totals
        return changed

    def seconds(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.started

    def checkpoint(self, *, end_reason: str = "", now: float | None = None) -> float:
        """Record the running totals and bill the difference (idempotent); returns the seconds billed."""
        now = time.monotonic() if now is None else now
        out_seconds = self.audio_out_seconds + (now - self.speaking_since if self.speaking_since is not None else 0)
        billed = svc.voice_usage_checkpoint(
            conversation_id=self.conversation_id,
            license_id=self.metadata.license,
            usage=self.usage,
            audio_in_seconds=self.seconds(now),
            audio_out_seconds=out_seconds,
            cost_usd=self.cost(),
            end_reason=end_reason,
        )
        self.billed_seconds += billed
        self.quota_left_seconds -= billed
        return billed

    def cost(self) -> Decimal:
        return svc.usage_cost(model=self.session["model"], usage=self.usage)

    def tick(self, now: float | None = None) -> tuple[list[dict[str, Any]], str]:
        """What the limits say now: warnings to send, and an end reason ("" while the call may go on)."""
        now = time.monotonic() if now is None else now
        elapsed = self.seconds(now)
        if elapsed >= self.max_seconds:
            return [], "max_duration"
        out: list[dict[str, Any]] = []
        if self.max_seconds - elapsed <= min(WARN_BEFORE_SECONDS, self.max_seconds / 2) and "time" not in self.warned:
            self.warned.add("time")
            out.append(events.warning(code="session_time_low", message="This call will end in less than 30 seconds."))
        left = self.quota_left_seconds - (elapsed - self.billed_seconds)
        if left <= 0:
            return out, "voice_minutes_exhausted"
        if left <= WARN_BEFORE_SECONDS and "minutes" not in self.warned:
            self.warned.add("minutes")
            out.append(
                events.warning(code="voice_minutes_low", message="This site's voice minutes are almost used up.")
            )
        return out, ""

    def end(self, reason: str) -> list[dict[str, Any]]:
        """Finalise the conversation (ended, usage billed) and release the slot; the events to send last."""
        if self.ended:
            return []
        self.ended = True
        try:
            self.checkpoint(end_reason=reason)
        finally:
            svc.voice_slot_release(key=self.metadata.slot, token=self.metadata.slot_token)
        return [events.session_ended(reason=reason)]


def realtime_model_options(session: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI Realtime plugin's options for the session `session_config` built (no key in them).

    Instructions and tools go to the Agent (the plugin sends them in its own `session.update`); the audio
    formats are the plugin's own (PCM 24 kHz, as ours)."""
    from openai.types import realtime
    from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad, ServerVad

    audio_in = session["audio"]["input"]
    audio_out = session["audio"]["output"]
    td = audio_in["turn_detection"]
    turn_detection: Any = SemanticVad(**td) if td["type"] == "semantic_vad" else ServerVad(**td)
    transcription = audio_in.get("transcription")
    noise = audio_in.get("noise_reduction")
    return {
        "model": session["model"],
        "voice": audio_out["voice"],
        "speed": audio_out["speed"],
        "modalities": list(session["output_modalities"]),
        "input_audio_transcription": realtime.AudioTranscription(**transcription) if transcription else None,
        "input_audio_noise_reduction": noise["type"] if noise else None,
        "turn_detection": turn_detection,
        "tool_choice": session["tool_choice"],
    }
