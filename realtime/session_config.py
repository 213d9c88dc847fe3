"""The ONE builder of the Realtime `session` object (DESIGN rule 1, seed 000).

The relay's `session.update`, `GET /api/realtime/config` (what the configurator shows) and the
ephemeral-key endpoint (`POST /api/realtime/client-secret`) all call `session_config`, so the
three can never drift apart. It reads only the PUBLISHED config; it never contains a key.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from licenses.identity import identity_text
from widgets.config_schema import DEFAULT_CONFIG, deep_merge
from widgets.models import Widget
from widgets.page_context import page_context_for_agents, page_context_text
from widgets.tools import tools_enabled, tools_guidance

SAMPLE_RATE = 24000
AUDIO_FORMAT = {"type": "audio/pcm", "rate": SAMPLE_RATE}


def session_instructions(
    *,
    voice: dict[str, Any],
    config: dict[str, Any],
    page_context: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
) -> str:
    """Voice instructions + business facts + when to use each enabled tool (+ the visitor's page, when
    the widget sends page context: widgets.page_context; + the signed-in visitor, marked verified or not:
    licenses.identity). The same blocks, in the same words, as the ChatKit agent's."""
    parts = [voice.get("instructions", "").strip()]
    facts = voice.get("business_facts", "").strip()
    if facts:
        parts.append("Business facts (authoritative; prefer them over anything else):\n" + facts)
    parts.append(tools_guidance(tools_enabled(config)))
    parts.append("You are speaking out loud: keep answers short and natural, no lists, no markdown, no URLs.")
    parts.append(page_context_text(page_context_for_agents(page_context, config=config)))
    parts.append(identity_text(identity))
    return "\n\n".join(p for p in parts if p)


def _turn_detection(td: dict[str, Any]) -> dict[str, Any]:
    if td.get("type") == "semantic_vad":
        return {
            "type": "semantic_vad",
            "eagerness": td.get("eagerness", "auto"),
            "create_response": True,
            "interrupt_response": True,
        }
    return {
        "type": "server_vad",
        "threshold": td.get("threshold", 0.5),
        "prefix_padding_ms": td.get("prefix_padding_ms", 300),
        "silence_duration_ms": td.get("silence_duration_ms", 500),
        "create_response": True,
        "interrupt_response": True,
    }


def session_config(
    *,
    config: dict[str, Any],
    widget: Widget | None = None,
    page_context: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The GA Realtime `session` object for a published widget config (no secrets in it). `page_context`:
    the visitor's page, already checked (widgets.page_context), used only when the config sends it;
    `identity`: the visitor's identity as the server read it from its signed token (`verified` is ours,
    never the page's word). Both come from realtime.services.voice_context_read on every transport."""
    config = deep_merge(DEFAULT_CONFIG, config or {})
    voice = config["voice"]
    audio_input: dict[str, Any] = {"format": dict(AUDIO_FORMAT)}
    if voice.get("transcription_model"):
        audio_input["transcription"] = {"model": voice["transcription_model"]}
    audio_input["noise_reduction"] = (
        None if voice.get("noise_reduction") == "off" else {"type": voice.get("noise_reduction", "near_field")}
    )
    audio_input["turn_detection"] = _turn_detection(voice.get("turn_detection") or {})
    tools = tools_enabled(config)
    return {
        "type": "realtime",
        "model": voice.get("model") or settings.REALTIME_DEFAULT_MODEL,
        "output_modalities": ["audio"],
        "instructions": session_instructions(voice=voice, config=config, page_context=page_context, identity=identity),
        "audio": {
            "input": audio_input,
            "output": {
                "format": dict(AUDIO_FORMAT),
                "voice": voice.get("voice", "marin"),
                "speed": voice.get("speed", 1.0),
            },
        },
        "tools": [t.schema() for t in tools],
        "tool_choice": "auto",
        "max_output_tokens": voice.get("max_output_tokens", 1024),
    }
