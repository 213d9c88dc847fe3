"""Server-side tools shared by every agent channel (voice relay, WebRTC tool endpoint, ChatKit server).

A tool has a name, a description, JSON-schema parameters, a line of guidance for the model's
instructions, and a handler `(widget, conversation, args, config) -> ToolResult`, where `config` is the
config the agent runs on (published, or the draft in the configurator preview). The handler only ever
reads the widget's own rows (tenant isolation) and returns what the model should say (`speak`)
plus an optional UI event (widgets/ui_events.py) the widget renders as in text chat.

`tool_run` is the one entry point: it checks the tool is enabled in the config the agent runs on,
validates the arguments and turns any bad input or failure into a polite spoken fallback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from jsonschema import Draft202012Validator

from licenses.api import ApiError, json_check, json_loads
from widgets import ui_events
from widgets.config_schema import config_upgrade
from widgets.models import Conversation, Widget
from widgets.selectors import knowledge_search, product_search, search_score, search_tokens

logger = logging.getLogger(__name__)

FALLBACK = "Sorry, I couldn't do that just now. Could you say it another way?"


@dataclass(frozen=True)
class ToolResult:
    speak: str
    ui_event: dict[str, Any] | None = None
    ok: bool = True
    data: dict[str, Any] = field(default_factory=dict)
    # A lead was stored: its source. Every channel tells the page (its `lead` event, the source only).
    lead_source: str = ""

    def output(self) -> str:
        """The `function_call_output.output` string the model receives."""
        return json.dumps({"ok": self.ok, "say": self.speak, **self.data}, ensure_ascii=False)


class ToolArgumentError(ValueError):
    """Arguments the model sent do not make sense; the message is spoken back politely."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    guidance: str
    handler: Callable[[Widget, Conversation | None, dict[str, Any], dict[str, Any]], ToolResult]

    def schema(self) -> dict[str, Any]:
        """The GA Realtime (and Responses) function tool shape."""
        return {"type": "function", "name": self.name, "description": self.description, "parameters": self.parameters}


# --- text matching ----------------------------------------------------------------------------


# --- handlers ---------------------------------------------------------------------------------


def _published_config(widget: Widget) -> dict[str, Any]:
    version = widget.published_version
    return version.config if version is not None else widget.config


def _search_knowledge(
    widget: Widget, conversation: Conversation | None, args: dict[str, Any], config: dict[str, Any]
) -> ToolResult:
    entries = knowledge_search(widget=widget, query=args["query"])
    if not entries:
        return ToolResult(
            "I don't have that in my notes. I can connect you with the team if you like.", data={"matches": []}
        )
    matches = [{"question": e.question, "answer": e.answer[:1200]} for e in entries]
    return ToolResult(entries[0].answer[:600], data={"matches": matches})


def _search_products(
    widget: Widget, conversation: Conversation | None, args: dict[str, Any], config: dict[str, Any]
) -> ToolResult:
    max_price = None
    if args.get("max_price") is not None:
        try:
            max_price = Decimal(str(args["max_price"]))
        except InvalidOperation:
            raise ToolArgumentError("max_price")
        if max_price < 0:
            raise ToolArgumentError("max_price")
    products = product_search(widget=widget, query=args.get("query", ""), max_price=max_price)
    if not products:
        return ToolResult(
            "I couldn't find a product that matches. Would you like something else?", data={"products": []}
        )
    names = ", ".join(f"{p.title} ({p.currency} {p.price:.2f})" if p.price is not None else p.title for p in products)
    return ToolResult(
        f"I found {len(products)} option{'s' if len(products) != 1 else ''}: {names}. They're on your screen now.",
        ui_events.product_cards(products),
        data={
            "products": [
                {"title": p.title, "price": None if p.price is None else f"{p.price:.2f}", "in_stock": p.in_stock}
                for p in products
            ]
        },
    )


def _start_trade_in(
    widget: Widget, conversation: Conversation | None, args: dict[str, Any], config: dict[str, Any]
) -> ToolResult:
    devices = config.get("tools", {}).get("trade_in_devices", [])
    device = (args.get("device") or "").strip()[:120]
    return ToolResult(
        "I've opened a short trade-in form on your screen. Fill it in and we'll send you a quote.",
        ui_events.trade_in_form(device=device, devices=devices),
    )


def _get_demo_clip(
    widget: Widget, conversation: Conversation | None, args: dict[str, Any], config: dict[str, Any]
) -> ToolResult:
    clips = config.get("tools", {}).get("demo_clips", [])
    tokens = search_tokens(args["topic"])
    scored = [(search_score(tokens, [(c.get("topic", ""), 2), (c.get("title", ""), 1)]), c) for c in clips]
    best = max(scored, key=lambda x: x[0], default=(0, None))
    if best[1] is None or best[0] == 0:
        topics = ", ".join(c["topic"] for c in clips[:5])
        return ToolResult(
            f"I don't have a demo on that. I have demos on: {topics}." if topics else "I don't have demo clips yet."
        )
    clip = best[1]
    return ToolResult(
        f"Here's a demo of {clip['topic']} on your screen.",
        ui_events.demo_clip(topic=clip["topic"], title=clip.get("title", ""), url=clip["url"]),
    )


def _create_meeting_link(
    widget: Widget, conversation: Conversation | None, args: dict[str, Any], config: dict[str, Any]
) -> ToolResult:
    url = config.get("tools", {}).get("booking_url", "")
    if not url:
        return ToolResult("Booking isn't set up online yet, but I can take your details so the team can call you.")
    email = (args.get("email") or "").strip()
    if email:
        try:
            validate_email(email)
        except ValidationError:
            email = ""
    return ToolResult(
        "I've put a booking link on your screen. Pick any time that suits you.",
        ui_events.meeting_link(url=url, name=(args.get("name") or "").strip()[:200], email=email),
    )


def _log_lead(
    widget: Widget, conversation: Conversation | None, args: dict[str, Any], config: dict[str, Any]
) -> ToolResult:
    from widgets.services.leads import lead_create

    name = args["name"].strip()[:200]
    email = args["email"].strip()
    if not name:
        raise ToolArgumentError("name")
    try:
        validate_email(email)
    except ValidationError:
        return ToolResult("That email address doesn't look right. Could you spell it for me?", ok=False)
    if conversation is not None and conversation.is_preview:
        # A configurator test call: nothing reaches the Leads page or the agency's CRM.
        return ToolResult(
            f"Thanks {name.split()[0]}, I've passed your details to the team. They'll be in touch.",
            data={"lead_id": None, "preview": True},
        )
    lead = lead_create(
        widget=widget,
        conversation=conversation,
        source=conversation.channel if conversation is not None else "voice",
        name=name,
        email=email,
        phone=(args.get("phone") or "").strip()[:50],
        interest=(args.get("interest") or "").strip()[:500],
    )
    return ToolResult(
        f"Thanks {name.split()[0]}, I've passed your details to the team. They'll be in touch.",
        data={"lead_id": lead.pk},
        lead_source=lead.source,
    )


def _params(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_TEXT = {"type": "string", "maxLength": 500}

TOOLS: dict[str, Tool] = {
    t.name: t
    for t in [
        Tool(
            "search_knowledge",
            "Search the business's knowledge base (FAQ, policies, opening hours, services) for an answer.",
            _params({"query": {**_TEXT, "minLength": 1, "description": "What the visitor wants to know."}}, ["query"]),
            "Use search_knowledge before answering any question about the business, its policies or services; "
            "never guess facts that are not in your instructions.",
            _search_knowledge,
        ),
        Tool(
            "search_products",
            "Search the product catalogue; the matching products appear as cards on the visitor's screen.",
            _params(
                {
                    "query": {**_TEXT, "description": "Product words, e.g. 'phone' or 'laptop 16GB'."},
                    "max_price": {"type": "number", "minimum": 0, "description": "Highest price, if given."},
                },
                ["query"],
            ),
            "Use search_products when the visitor asks what you sell, for a product, or for something under a "
            "price; then summarise in one sentence, the cards show the details.",
            _search_products,
        ),
        Tool(
            "start_trade_in",
            "Open the trade-in form on the visitor's screen, optionally prefilled with their device.",
            _params({"device": {**_TEXT, "description": "The device to trade in, if mentioned."}}, []),
            "Use start_trade_in when the visitor wants to trade in, sell or swap an old device.",
            _start_trade_in,
        ),
        Tool(
            "get_demo_clip",
            "Show a short demo video about a topic on the visitor's screen.",
            _params({"topic": {**_TEXT, "minLength": 1}}, ["topic"]),
            "Use get_demo_clip when the visitor asks to see how something works.",
            _get_demo_clip,
        ),
        Tool(
            "create_meeting_link",
            "Show a link where the visitor can book a meeting or a call.",
            _params({"name": _TEXT, "email": _TEXT}, []),
            "Use create_meeting_link when the visitor wants a meeting, a call, a demo with a person or a quote.",
            _create_meeting_link,
        ),
        Tool(
            "log_lead",
            "Save the visitor's contact details for the sales team.",
            _params(
                {
                    "name": {**_TEXT, "minLength": 1},
                    "email": {**_TEXT, "minLength": 3},
                    "phone": {"type": "string", "maxLength": 50},
                    "interest": _TEXT,
                },
                ["name", "email"],
            ),
            "Use log_lead once the visitor has given their name and email and agreed to be contacted; "
            "confirm the details back before calling it.",
            _log_lead,
        ),
    ]
}

_VALIDATORS = {name: Draft202012Validator(tool.parameters) for name, tool in TOOLS.items()}


def tools_enabled(config: dict[str, Any]) -> list[Tool]:
    """The tools the config turns on (`tools.enabled`, one list for voice and ChatKit), in registry order."""
    switches = (config_upgrade(config).get("tools") or {}).get("enabled") or {}
    return [tool for name, tool in TOOLS.items() if switches.get(name)]


def tools_guidance(tools: list[Tool]) -> str:
    """The instructions paragraph on when to use each tool: the same words for every agent channel."""
    if not tools:
        return ""
    return (
        "Tools:\n" + "\n".join(f"- {t.guidance}" for t in tools) + "\n\n"
        "When a tool shows something on the visitor's screen (products, a form, a link, a video), say one short "
        "sentence about it instead of reading it all out."
    )


def tool_run(
    *,
    name: str,
    widget: Widget,
    conversation: Conversation | None,
    arguments: str | dict[str, Any] | None,
    config: dict[str, Any] | None = None,
) -> ToolResult:
    """Run an enabled tool with the model's arguments (a JSON string or dict). Never raises."""
    config = config if config is not None else _published_config(widget)
    tool = TOOLS.get(name)
    if tool is None or tool not in tools_enabled(config):
        return ToolResult("Sorry, I can't do that here.", ok=False, data={"error": "unknown_tool"})
    try:
        # The one JSON rule (depth, NUL, surrogates), whether the arguments come from the model or a body.
        args = json_check(json_loads(arguments or "{}") if isinstance(arguments, str | bytes) else (arguments or {}))
    except ApiError:
        return ToolResult(FALLBACK, ok=False, data={"error": "invalid_arguments"})
    if not isinstance(args, dict) or next(_VALIDATORS[name].iter_errors(args), None) is not None:
        return ToolResult(FALLBACK, ok=False, data={"error": "invalid_arguments"})
    try:
        return tool.handler(widget, conversation, args, config)
    except ToolArgumentError:
        return ToolResult(FALLBACK, ok=False, data={"error": "invalid_arguments"})
    except Exception:
        logger.exception("tool %s failed for widget %s", name, widget.pk)
        return ToolResult(
            "Sorry, something went wrong on my side. Let's try that again in a moment.",
            ok=False,
            data={"error": "tool_failed"},
        )
