"""The widget config: one schema, its defaults, validation, normalisation and the public view.

This module is the single source of truth for a widget's behaviour (DESIGN rule 1). The REST
API, the configurator (which validates as you type against `CONFIG_SCHEMA`, served as JSON),
the public embed and the voice session builder all go through it.
"""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from jsonschema import Draft202012Validator

from licenses.api import DISPLAY_FORBIDDEN, DISPLAY_TEXT_MESSAGE, ApiError
from widgets.widget_strings import STRING_KEYS, strings_resolve

HEX = r"^#[0-9a-fA-F]{6}$"
VOICES = ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"]
TOOL_NAMES = [
    "search_knowledge",
    "search_products",
    "start_trade_in",
    "get_demo_clip",
    "create_meeting_link",
    "log_lead",
]


def _obj(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


def _str(max_length: int = 500, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, **extra}


def _display(max_length: int) -> dict[str, Any]:
    """One line of display text an agency sets (title, UI strings): the shared rule of licenses.api."""
    return _str(max_length, pattern=f"^[^{DISPLAY_FORBIDDEN}]*$", description=DISPLAY_TEXT_MESSAGE)


def _int(minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def _num(minimum: float, maximum: float) -> dict[str, Any]:
    return {"type": "number", "minimum": minimum, "maximum": maximum}


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


_BOOL = {"type": "boolean"}
_COLOR = {"type": "string", "pattern": HEX, "description": "A hex colour such as #4f46e5."}
# Proactive rules' page patterns (`behaviour.proactive.show_on` / `hide_on`): a page path such as /pricing or
# /blog/*, where `*` matches any characters (slashes too). Matched by the widget (static/widget/widget.js,
# pathMatches) against the page's path, whole, case-insensitively, a trailing slash ignored; no host, query or
# fragment. A glob matched in linear time, never a regular expression: a pattern cannot slow the page down.
PATH_PATTERN = r"^/[^\s?#\x00-\x1f\x7f]*$"
PATH_PATTERN_HELP = (
    "A page path such as /pricing or /blog/*: it starts with /, * matches anything; no host, ?, # or spaces."
)
PATH_PATTERNS_MAX = 20
PATH_PATTERN_MAX_LENGTH = 200
_PATH_PATTERNS = {
    "type": "array",
    "maxItems": PATH_PATTERNS_MAX,
    "items": {
        "type": "string",
        "minLength": 1,
        "maxLength": PATH_PATTERN_MAX_LENGTH,
        "pattern": PATH_PATTERN,
        "description": PATH_PATTERN_HELP,
    },
}
_URL_OR_EMPTY = {
    "type": "string",
    "maxLength": 2000,
    "pattern": r"^(https?://[^\s]+)?$",
    "description": "An http(s) URL, or empty.",
}

CONFIG_SCHEMA: dict[str, Any] = _obj(
    {
        "connection": _obj(
            {
                "provider": _enum("n8n", "chatkit"),
                "n8n": _obj(
                    {
                        "webhook_url": _URL_OR_EMPTY,
                        "streaming": _BOOL,
                        "basic_auth": _BOOL,
                    }
                ),
                "chatkit": _obj(
                    {
                        "mode": _enum("hosted", "server"),
                        "workflow_id": {
                            "type": "string",
                            "maxLength": 200,
                            "pattern": r"^(wf_[A-Za-z0-9_-]+)?$",
                            "description": "An Agent Builder workflow id (wf_…), or empty.",
                        },
                        "workflow_version": _str(50),
                        "model": _enum("", *settings.CHATKIT_MODELS),
                        "instructions": _str(20000),
                    }
                ),
            }
        ),
        "appearance": _obj(
            {
                "n8n": _obj(
                    {
                        "primary_color": _COLOR,
                        "background_color": _COLOR,
                        "text_color": _COLOR,
                        "bubble_user_color": _COLOR,
                        "bubble_bot_color": _COLOR,
                        "title": _display(80),
                        "subtitle": _display(160),
                        "launcher_icon": _enum("chat", "message", "sparkle", "headset"),
                        "radius": _int(0, 32),
                        "font_family": _str(200, pattern=r"^[A-Za-z0-9 ,'\"_-]*$"),
                        "font_size": _int(12, 20),
                        "color_scheme": _enum("light", "dark", "auto"),
                        "avatar_url": _URL_OR_EMPTY,
                    }
                ),
                "chatkit": _obj(
                    {
                        "color_scheme": _enum("light", "dark", "auto"),
                        "grayscale_hue": _int(0, 360),
                        "grayscale_tint": _int(0, 9),
                        "grayscale_shade": _int(-4, 4),
                        "accent_color": _COLOR,
                        "accent_level": _int(0, 3),
                        "radius": _enum("pill", "round", "soft", "sharp"),
                        "density": _enum("compact", "normal", "spacious"),
                        "base_font_size": _int(14, 18),
                    }
                ),
            }
        ),
        "behaviour": _obj(
            {
                "greeting": _str(500),
                "starter_prompts": {"type": "array", "maxItems": 6, "items": _str(120, minLength=1)},
                "placeholder": _str(120),
                "initial_messages": {"type": "array", "maxItems": 5, "items": _str(500, minLength=1)},
                "file_uploads": _BOOL,
                "history": _BOOL,
                "load_previous_session": _BOOL,
                # Page URL, title, referrer and Switchboard.setContext() go to n8n / the agents (issue 15.3).
                "page_context": _BOOL,
                "disclaimer": _str(500),
                "locale": _str(10, pattern=r"^([a-z]{2}(-[A-Z]{2})?)?$"),
                # Proactive rules (issue 15.4), popups only: which pages show the launcher, a greeting bubble
                # with an unread badge, auto-open after N seconds or on exit intent, at most once per period.
                "proactive": _obj(
                    {
                        "enabled": _BOOL,
                        "show_on": _PATH_PATTERNS,
                        "hide_on": _PATH_PATTERNS,
                        "message": _str(300),
                        "message_delay_seconds": _int(0, 600),
                        "open_after_seconds": _int(0, 3600),
                        "open_on_exit_intent": _BOOL,
                        "frequency": _enum("page_view", "session", "days"),
                        "frequency_days": _int(1, 365),
                    }
                ),
                # Overrides of the widget's UI texts (widgets/widget_strings.py); empty = the locale's.
                "strings": _obj(dict.fromkeys(STRING_KEYS, _display(200))),
            }
        ),
        "embed": _obj(
            {
                "mode": _enum("popup", "inline", "fullpage"),
                "position": _enum("bottom-right", "bottom-left"),
                "width": _int(280, 800),
                "height": _int(360, 1000),
                "offset_x": _int(0, 200),
                "offset_y": _int(0, 200),
            }
        ),
        "voice": _obj(
            {
                "enabled": _BOOL,
                "transport": _enum("relay", "webrtc", "livekit"),
                "model": _enum("", *settings.REALTIME_PRICES),
                "voice": _enum(*VOICES),
                "speed": _num(0.25, 1.5),
                "instructions": _str(20000),
                "business_facts": _str(20000),
                "transcription_model": _str(100, pattern=r"^[A-Za-z0-9._:-]*$"),
                "noise_reduction": _enum("near_field", "far_field", "off"),
                "turn_detection": _obj(
                    {
                        "type": _enum("server_vad", "semantic_vad"),
                        "threshold": _num(0, 1),
                        "prefix_padding_ms": _int(0, 2000),
                        "silence_duration_ms": _int(100, 5000),
                        "eagerness": _enum("low", "medium", "high", "auto"),
                    }
                ),
                "max_output_tokens": _int(1, 4096),
                "max_session_seconds": _int(30, 3600),
                "consent_required": _BOOL,
                "consent_text": _str(500),
            }
        ),
        "tools": _obj(
            {
                # The ONE enable list of the server-side tools (widgets/tools.py), for every agent
                # channel: voice and ChatKit. Configs saved before it lived here kept it in voice.tools
                # (config_upgrade moves it).
                "enabled": _obj(dict.fromkeys(TOOL_NAMES, _BOOL)),
                "booking_url": _URL_OR_EMPTY,
                "demo_clips": {
                    "type": "array",
                    "maxItems": 50,
                    "items": _obj(
                        {"topic": _str(120, minLength=1), "title": _str(200), "url": {**_URL_OR_EMPTY, "minLength": 8}},
                        required=["topic", "url"],
                    ),
                },
                "trade_in_devices": {"type": "array", "maxItems": 50, "items": _str(120, minLength=1)},
            }
        ),
    }
)

DEFAULT_CONFIG: dict[str, Any] = {
    "connection": {
        "provider": "n8n",
        "n8n": {"webhook_url": "", "streaming": False, "basic_auth": False},
        "chatkit": {
            "mode": "server",
            "workflow_id": "",
            "workflow_version": "",
            "model": "",
            "instructions": "You are a helpful assistant for this business. Be concise and friendly.",
        },
    },
    "appearance": {
        "n8n": {
            "primary_color": "#4f46e5",
            "background_color": "#ffffff",
            "text_color": "#111827",
            "bubble_user_color": "#4f46e5",
            "bubble_bot_color": "#f3f4f6",
            "title": "Chat with us",
            "subtitle": "We usually reply in seconds",
            "launcher_icon": "chat",
            "radius": 16,
            "font_family": "",
            "font_size": 15,
            "color_scheme": "light",
            "avatar_url": "",
        },
        "chatkit": {
            "color_scheme": "light",
            "grayscale_hue": 220,
            "grayscale_tint": 6,
            "grayscale_shade": -1,
            "accent_color": "#4f46e5",
            "accent_level": 1,
            "radius": "round",
            "density": "normal",
            "base_font_size": 16,
        },
    },
    "behaviour": {
        "greeting": "Hi! How can I help you today?",
        "starter_prompts": [],
        "placeholder": "Type your message…",
        "initial_messages": [],
        "file_uploads": False,
        "history": True,
        "load_previous_session": True,
        "page_context": False,
        "proactive": {
            "enabled": False,
            "show_on": [],
            "hide_on": [],
            "message": "",
            "message_delay_seconds": 3,
            "open_after_seconds": 0,
            "open_on_exit_intent": False,
            "frequency": "session",
            "frequency_days": 7,
        },
        "disclaimer": "",
        "locale": "",
        "strings": {},
    },
    "embed": {"mode": "popup", "position": "bottom-right", "width": 400, "height": 600, "offset_x": 20, "offset_y": 20},
    "voice": {
        "enabled": False,
        "transport": "relay",
        "model": "",
        "voice": "marin",
        "speed": 1.0,
        "instructions": "You are a friendly voice assistant. Keep answers short and conversational.",
        "business_facts": "",
        "transcription_model": "gpt-4o-mini-transcribe",
        "noise_reduction": "near_field",
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "eagerness": "auto",
        },
        "max_output_tokens": 1024,
        "max_session_seconds": 900,
        "consent_required": False,
        "consent_text": "This call is processed by an AI assistant and may be transcribed.",
    },
    "tools": {
        "enabled": {name: name in ("search_knowledge", "search_products") for name in TOOL_NAMES},
        "booking_url": "",
        "demo_clips": [],
        "trade_in_devices": [],
    },
}

_VALIDATOR = Draft202012Validator(CONFIG_SCHEMA)


class ConfigError(ValueError):
    """Invalid config: `errors` maps a field path (`appearance.chatkit.accent_level`) to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        path, messages = next(iter(errors.items()))
        super().__init__(f"{path}: {messages[0]}")

    def api_error(self, message: str | None = None) -> ApiError:
        """The one mapping to the API: 400 `invalid_config`, fields keyed `config.<path>`."""
        fields = {f"config.{path}" if path != "config" else "config": msgs for path, msgs in self.errors.items()}
        return ApiError("invalid_config", message or str(self), fields=fields)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Dicts merge key by key; any other value (lists included) replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _path(error: Any) -> str:
    parts: list[str] = []
    for part in error.absolute_path:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        else:
            parts.append(str(part))
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        parts.append(extra[0] if extra else "")
    if error.validator == "required":
        missing = [r for r in error.validator_value if r not in error.instance]
        parts.append(missing[0] if missing else "")
    return ".".join(p for p in parts if p) or "config"


def _message(error: Any) -> str:
    schema = error.schema
    v = error.validator
    if v == "additionalProperties":
        return "Unknown setting."
    if v == "required":
        return "This field is required."
    if v == "enum":
        return f"Choose one of: {', '.join(map(str, error.validator_value))}."
    if v == "type":
        return f"Must be a {error.validator_value}."
    if v in ("minimum", "maximum"):
        return f"Must be between {schema.get('minimum')} and {schema.get('maximum')}."
    if v == "maxLength":
        return f"At most {error.validator_value} characters."
    if v == "minLength":
        return "Must not be empty."
    if v == "maxItems":
        return f"At most {error.validator_value} items."
    if v == "pattern":
        return schema.get("description") or "Has an invalid format."
    return error.message


def config_errors(config: Any) -> dict[str, list[str]]:
    if not isinstance(config, dict):
        return {"config": ["Must be an object."]}
    errors: dict[str, list[str]] = {}
    for error in sorted(_VALIDATOR.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        errors.setdefault(_path(error), []).append(_message(error))
    return errors


def config_upgrade(config: Any) -> Any:
    """A config in the current shape; older shapes are moved, never dropped (a copy when it changes).

    - The tool switches lived in `voice.tools` while only voice had tools; they are `tools.enabled`
      now, one list for voice and ChatKit (what `voice.tools` says wins over `tools.enabled`).
    """
    if not isinstance(config, dict):
        return config
    voice = config.get("voice")
    if not isinstance(voice, dict) or "tools" not in voice:
        return config
    config = copy.deepcopy(config)
    legacy = config["voice"].pop("tools")
    tools = config.get("tools") if isinstance(config.get("tools"), dict) else {}
    enabled = tools.get("enabled") if isinstance(tools.get("enabled"), dict) else {}
    if isinstance(legacy, dict):
        enabled = {**enabled, **legacy}
    config["tools"] = {**tools, "enabled": enabled}
    return config


def config_normalize(config: dict[str, Any] | None, *, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults + `base` (the current draft) + `config`, validated. Raises ConfigError with field paths."""
    if config is not None and not isinstance(config, dict):
        raise ConfigError({"config": ["Must be an object."]})
    config, base = config_upgrade(config), config_upgrade(base)
    errors = config_errors(config or {})
    if errors:
        raise ConfigError(errors)
    merged = deep_merge(deep_merge(DEFAULT_CONFIG, base or {}), config or {})
    errors = config_errors(merged)
    if errors:
        raise ConfigError(errors)
    behaviour = merged["behaviour"]
    behaviour["starter_prompts"] = [p.strip() for p in behaviour["starter_prompts"] if p.strip()]
    return merged


def config_draft(draft: Any, *, base: dict[str, Any]) -> dict[str, Any]:
    """An editor's UNSAVED draft as the previews send it (`{"config": draft}`), merged over the saved
    draft `base` and validated like a save; nothing is saved. Raises ApiError 400 `invalid_config`."""
    if not isinstance(draft, dict):
        raise ApiError("invalid_config", 'Send the draft as {"config": {...}}.')
    try:
        return config_normalize(draft, base=base)
    except ConfigError as exc:
        raise exc.api_error()


def config_widget_type(config: dict[str, Any]) -> str:
    """`widget_type` follows `connection.provider`, always (seed 002, bug 1)."""
    return config["connection"]["provider"]


def _public_behaviour(behaviour: dict[str, Any]) -> dict[str, Any]:
    """The behaviour block; a version published before proactive rules existed gets them off (the default)."""
    out = copy.deepcopy(behaviour)
    out["proactive"] = deep_merge(DEFAULT_CONFIG["behaviour"]["proactive"], behaviour.get("proactive") or {})
    return out


def config_public(config: dict[str, Any]) -> dict[str, Any]:
    """What a visitor's browser may see: no webhook URL, workflow id, instructions or facts."""
    connection = config["connection"]
    voice = config["voice"]
    return {
        "provider": connection["provider"],
        "connection": {
            "provider": connection["provider"],
            "streaming": bool(connection["n8n"]["streaming"]),
            "chatkit_mode": connection["chatkit"]["mode"],
        },
        "appearance": copy.deepcopy(config["appearance"][connection["provider"]]),
        "behaviour": _public_behaviour(config["behaviour"]),
        "strings": strings_resolve(config["behaviour"]),
        "embed": copy.deepcopy(config["embed"]),
        "voice": {
            "enabled": bool(voice["enabled"]),
            "transport": voice["transport"],
            "consent_required": bool(voice["consent_required"]),
            "consent_text": voice["consent_text"],
            "max_session_seconds": voice["max_session_seconds"],
        },
    }
