"""The configurator's controls, derived from CONFIG_SCHEMA: one list of sections, rendered by templates.

Each control knows its config path, label and the schema facts the browser validator also reads, so
the server-side schema stays the single source of truth for types, ranges and enums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from widgets.config_schema import CONFIG_SCHEMA, DEFAULT_CONFIG, TOOL_NAMES
from widgets.widget_strings import LOCALES, STRING_KEYS, STRINGS


def schema_at(path: str) -> dict[str, Any]:
    node: dict[str, Any] = CONFIG_SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
    return node


def value_at(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    fallback: Any = DEFAULT_CONFIG
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
        fallback = fallback.get(part) if isinstance(fallback, dict) else None
    return fallback if node is None else node


LABELS = {
    "": "Platform default",
    "hosted": "Hosted workflow (retired by OpenAI)",
    "server": "ChatKit server (recommended)",
    "bottom-right": "Bottom right",
    "bottom-left": "Bottom left",
    "popup": "Popup",
    "inline": "Inline",
    "fullpage": "Full page",
    "server_vad": "Server VAD (silence based)",
    "semantic_vad": "Semantic VAD",
    "near_field": "Near field (headset, phone)",
    "far_field": "Far field (laptop, room)",
    "off": "Off",
    "relay": "Relay (through this server)",
    "webrtc": "WebRTC (browser to OpenAI)",
    "livekit": "LiveKit",
    "page_view": "On every page view",
    "session": "Once per browser session",
    "days": "Once every N days",
}


@dataclass
class Control:
    path: str
    label: str
    kind: str  # text | textarea | lines | color | number | range | select | checkbox
    help: str = ""
    value: Any = None
    options: list[tuple[str, str]] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    step: str = "1"
    max_length: int | None = None
    show_if: str = ""  # e.g. "connection.chatkit.mode=hosted"
    placeholder: str = ""

    @property
    def dom_id(self) -> str:
        return "f-" + self.path.replace(".", "-").replace("_", "-")


def control(
    path: str, label: str, *, kind: str = "", help: str = "", show_if: str = "", placeholder: str = ""
) -> Control:
    schema = schema_at(path)
    if not kind:
        if "enum" in schema:
            kind = "select"
        elif schema.get("type") == "boolean":
            kind = "checkbox"
        elif schema.get("type") in ("integer", "number"):
            kind = "number"
        elif schema.get("type") == "array":
            kind = "lines"
        elif schema.get("pattern") == r"^#[0-9a-fA-F]{6}$":
            kind = "color"
        elif schema.get("maxLength", 0) > 500 and "https?" not in schema.get("pattern", ""):
            kind = "textarea"
        else:
            kind = "text"
    return Control(
        path=path,
        label=label,
        kind=kind,
        help=help,
        show_if=show_if,
        placeholder=placeholder,
        options=[(v, LABELS.get(v, v.replace("_", " ").capitalize())) for v in schema.get("enum", [])],
        minimum=schema.get("minimum"),
        maximum=schema.get("maximum"),
        step="1" if schema.get("type") == "integer" else "0.05",
        max_length=schema.get("maxLength") or (schema.get("items") or {}).get("maxLength"),
    )


@dataclass
class Group:
    title: str
    controls: list[Control]
    provider: str = ""  # "", "n8n" or "chatkit": shown only for that provider
    note: str = ""


@dataclass
class Section:
    key: str
    title: str
    groups: list[Group]


def _n8n_appearance() -> list[Control]:
    p = "appearance.n8n."
    return [
        control(p + "title", "Title"),
        control(p + "subtitle", "Subtitle"),
        control(p + "primary_color", "Primary colour", help="Header, launcher and send button."),
        control(p + "background_color", "Background"),
        control(p + "text_color", "Text colour"),
        control(p + "bubble_user_color", "Visitor bubble"),
        control(p + "bubble_bot_color", "Assistant bubble"),
        control(p + "color_scheme", "Colour scheme"),
        control(p + "launcher_icon", "Launcher icon"),
        control(p + "radius", "Corner radius (px)", kind="range"),
        control(p + "font_family", "Font family", placeholder="Inter, system-ui, sans-serif"),
        control(p + "font_size", "Font size (px)", kind="range"),
        control(p + "avatar_url", "Avatar image URL", placeholder="https://…"),
    ]


def _chatkit_appearance() -> list[Control]:
    p = "appearance.chatkit."
    return [
        control(p + "color_scheme", "Colour scheme"),
        control(p + "accent_color", "Accent colour"),
        control(p + "accent_level", "Accent level (0–3)", kind="range"),
        control(p + "grayscale_hue", "Grayscale hue (0–360°)", kind="range"),
        control(p + "grayscale_tint", "Grayscale tint (0–9)", kind="range"),
        control(p + "grayscale_shade", "Grayscale shade (−4…4)", kind="range"),
        control(p + "radius", "Corner radius"),
        control(p + "density", "Density"),
        control(p + "base_font_size", "Base font size (px)", kind="range"),
    ]


def sections() -> list[Section]:
    return [
        Section(
            "connection",
            "Connection",
            [
                Group(
                    "n8n Chat Trigger",
                    provider="n8n",
                    controls=[
                        control(
                            "connection.n8n.webhook_url",
                            "Webhook URL",
                            placeholder="https://n8n.example.com/webhook/…/chat",
                            help=(
                                "The Chat Trigger's production URL. Visitors never see it: chat goes through our proxy."
                            ),
                        ),
                        control(
                            "connection.n8n.streaming", "Stream replies", help="Enable if the Chat Trigger streams."
                        ),
                        control(
                            "connection.n8n.basic_auth",
                            "Basic auth",
                            help="The Chat Trigger asks for a username/password.",
                        ),
                    ],
                ),
                Group(
                    "OpenAI ChatKit",
                    provider="chatkit",
                    controls=[
                        control("connection.chatkit.mode", "Mode"),
                        control(
                            "connection.chatkit.workflow_id",
                            "Workflow id",
                            placeholder="wf_…",
                            show_if="connection.chatkit.mode=hosted",
                        ),
                        control(
                            "connection.chatkit.workflow_version",
                            "Workflow version",
                            placeholder="latest",
                            show_if="connection.chatkit.mode=hosted",
                        ),
                        control(
                            "connection.chatkit.model",
                            "Model",
                            show_if="connection.chatkit.mode=server",
                            help=f"Platform default: {settings.CHATKIT_DEFAULT_MODEL}.",
                        ),
                        control(
                            "connection.chatkit.instructions",
                            "Instructions",
                            show_if="connection.chatkit.mode=server",
                            help="What the assistant is for and how it speaks. The enabled tools and the business "
                            "facts (Tools, Voice) are added to it.",
                        ),
                    ],
                ),
            ],
        ),
        Section(
            "appearance",
            "Appearance",
            [
                Group("Chat window", _n8n_appearance(), provider="n8n"),
                Group("ChatKit theme", _chatkit_appearance(), provider="chatkit"),
                Group(
                    "Placement",
                    [
                        control("embed.mode", "Default embed mode"),
                        control("embed.position", "Launcher position"),
                        control("embed.offset_x", "Horizontal offset (px)"),
                        control("embed.offset_y", "Vertical offset (px)"),
                        control("embed.width", "Width (px)"),
                        control("embed.height", "Height (px)"),
                    ],
                ),
            ],
        ),
        Section(
            "behaviour",
            "Behaviour",
            [
                Group(
                    "Conversation",
                    [
                        control("behaviour.greeting", "Greeting", kind="textarea"),
                        control("behaviour.starter_prompts", "Starter prompts", help="One per line, up to 6."),
                        control("behaviour.initial_messages", "Initial messages", help="One per line, up to 5."),
                        control(
                            "behaviour.placeholder",
                            "Composer placeholder",
                            help="Left at “Type your message…” it follows the locale.",
                        ),
                        control("behaviour.disclaimer", "Disclaimer", kind="textarea"),
                        control(
                            "behaviour.locale",
                            "Locale",
                            placeholder="en or en-US",
                            help=f"The widget's own texts: {', '.join(LOCALES)}; any other language uses English.",
                        ),
                    ],
                ),
                Group(
                    "Widget texts",
                    provider="n8n",
                    note="Empty fields use the locale's text (shown greyed).",
                    controls=[
                        control(
                            f"behaviour.strings.{key}",
                            key.replace("_", " ").capitalize(),
                            placeholder=STRINGS["en"][key],
                        )
                        for key in STRING_KEYS
                        if key != "placeholder"
                    ],
                ),  # "Composer placeholder" above sets that one
                Group(
                    "Options",
                    [
                        control("behaviour.file_uploads", "Allow file uploads"),
                        control("behaviour.history", "Show history"),
                        control("behaviour.load_previous_session", "Load previous session"),
                        control(
                            "behaviour.page_context",
                            "Send page context",
                            help="Each message carries the page's URL, title and referrer and the site's "
                            "Switchboard.setContext({...}) object: n8n gets them in metadata, ChatKit and voice "
                            "agents as context. Off: only the visitor id is sent.",
                        ),
                    ],
                ),
            ],
        ),
        Section("proactive", "Proactive", [_proactive_group()]),
        Section(
            "tools",
            "Tools",
            [
                Group(
                    "Tools the assistant may use",
                    note="One list for ChatKit and voice: the assistant runs these on "
                    "the server with this widget's knowledge, products and leads.",
                    controls=[
                        control(f"tools.enabled.{name}", name.replace("_", " ").capitalize()) for name in TOOL_NAMES
                    ]
                    + [
                        control(
                            "tools.booking_url",
                            "Booking URL",
                            placeholder="https://cal.example.com/…",
                            help="Used by the meeting-link tool.",
                        ),
                        control(
                            "tools.trade_in_devices",
                            "Trade-in devices",
                            help="One per line: the trade-in form's device choices.",
                        ),
                    ],
                ),
            ],
        ),
        Section(
            "voice",
            "Voice",
            [
                Group(
                    "Voice assistant",
                    [
                        control("voice.enabled", "Enable voice", help="Adds a mic button to the widget."),
                        control("voice.model", "Model", help=f"Platform default: {settings.REALTIME_DEFAULT_MODEL}."),
                        control("voice.voice", "Voice"),
                        control("voice.speed", "Speaking speed"),
                        _transport_control(),
                        control("voice.instructions", "Instructions"),
                        control(
                            "voice.business_facts",
                            "Business facts",
                            help="Hours, policies, prices the assistant may quote.",
                        ),
                        control("voice.max_session_seconds", "Max call length (s)"),
                        control("voice.consent_required", "Ask for consent before a call"),
                        control("voice.consent_text", "Consent text", kind="textarea"),
                    ],
                ),
                Group(
                    "Turn detection",
                    [
                        control("voice.turn_detection.type", "Type"),
                        control("voice.turn_detection.threshold", "Threshold (0–1)"),
                        control("voice.turn_detection.silence_duration_ms", "Silence (ms)"),
                        control("voice.turn_detection.prefix_padding_ms", "Prefix padding (ms)"),
                        control(
                            "voice.turn_detection.eagerness",
                            "Eagerness",
                            show_if="voice.turn_detection.type=semantic_vad",
                        ),
                        control("voice.noise_reduction", "Noise reduction"),
                    ],
                ),
            ],
        ),
    ]


def _proactive_group() -> Group:
    p = "behaviour.proactive."
    on = "behaviour.proactive.enabled=true"
    return Group(
        "Proactive rules",
        note="For the popup launcher (inline and full-page widgets are always shown). Several widgets on one "
        "page each follow their own rules.",
        controls=[
            control(
                p + "enabled",
                "Use proactive rules",
                help="Off: the launcher shows on every page of the allowed sites and never opens by itself.",
            ),
            control(
                p + "show_on",
                "Show only on pages",
                show_if=on,
                help="One path pattern per line, such as /pricing or /blog/*: * matches anything, the whole path "
                "must match, upper/lower case and a trailing slash make no difference. Empty: every page.",
            ),
            control(
                p + "hide_on",
                "Never show on pages",
                show_if=on,
                help="Wins over the list above. There the launcher is not shown at all (the site's own "
                "Switchboard.open() still opens the chat).",
            ),
            control(
                p + "message",
                "Greeting bubble",
                show_if=on,
                placeholder="Questions about our plans? Ask me!",
                help="Shown beside the launcher, with an unread badge until the visitor opens the chat. "
                "Empty: no bubble.",
            ),
            control(p + "message_delay_seconds", "Show the bubble after (seconds)", show_if=on),
            control(p + "open_after_seconds", "Open the chat after (seconds)", show_if=on, help="0: never."),
            control(
                p + "open_on_exit_intent",
                "Open the chat on exit intent",
                show_if=on,
                help="When a desktop visitor's mouse leaves the page through the top (never on touch screens).",
            ),
            control(
                p + "frequency",
                "How often",
                show_if=on,
                help="Bubble and auto-open, per visitor: remembered in the visitor's browser (a browser that "
                "blocks storage is never greeted).",
            ),
            control(p + "frequency_days", "Days", show_if="behaviour.proactive.frequency=days"),
        ],
    )


def _transport_control() -> Control:
    """LiveKit is offered only when this server has LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET."""
    c = control(
        "voice.transport",
        "Transport",
        help="Relay: through this server. WebRTC: the browser talks to OpenAI directly "
        "(OpenAI shows the visitor's browser the session, instructions included). "
        "LiveKit: a LiveKit room with our voice agent (offered when this server has LiveKit settings). "
        "The preview's test calls always go over the relay, with the same session and tools.",
    )
    if not (settings.LIVEKIT_URL and settings.LIVEKIT_API_KEY and settings.LIVEKIT_API_SECRET):
        c.options = [(v, label) for v, label in c.options if v != "livekit"]
    return c


def sections_with_values(config: dict[str, Any]) -> list[Section]:
    out = sections()
    for section in out:
        for group in section.groups:
            for c in group.controls:
                value = value_at(config, c.path)
                c.value = "\n".join(value) if c.kind == "lines" and isinstance(value, list) else value
                if c.value is None:
                    c.value = ""
                if c.kind == "select" and c.value not in [v for v, _ in c.options]:
                    # A value no longer offered (LiveKit settings removed) stays visible, marked.
                    c.options.append((c.value, f"{LABELS.get(c.value, c.value)} (not available on this server)"))
    return out


def control_label(path: str) -> str:
    """The label a person sees for a config path (for messages without field paths)."""
    for section in sections():
        for group in section.groups:
            for c in group.controls:
                if c.path == path:
                    return c.label
    return "This setting"
