"""A small built-in stand-in for an n8n Chat Trigger workflow, for the seeded demo (DEBUG only).

`make run` must give a newcomer a widget that chats, streams, shows product cards and the trade-in
form without installing n8n. This "workflow" answers on `POST /demo/n8n/<widget public_id>/chat`
exactly as a Chat Trigger does (widgets/n8n.py documents the protocol):

- `{"action": "sendMessage", "sessionId", "chatInput", "metadata"}` → streaming NDJSON by default
  (`{"type": "begin"}`, `{"type": "item", "content"}`…, `{"type": "end", "ui": [...]}`), or with
  `?stream=0` the whole reply at once: `{"output": "...", "ui": [...]}`. Like a real workflow its
  response mode is part of its URL, not of the request.
- `{"action": "loadPreviousSession", "sessionId"}` → `{"data": [<LangChain messages>]}` from its memory.

It answers from the widget's own knowledge entries and products (the tools' search functions), and
produces the UI events the widget renders (widgets/ui_events.py). It is not an LLM: it matches
keywords, and says so when it has nothing to match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.cache import cache

from widgets import ui_events
from widgets.models import Widget
from widgets.selectors import knowledge_search, product_search

MEMORY_SECONDS = 86400
MAX_MEMORY = 40
PATH = "/demo/n8n/{public_id}/chat"

_GREETING = re.compile(r"^\s*(hi|hello|hey|hallo|bonjour|hola|good (morning|afternoon|evening))\b", re.I)
_TRADE_IN = re.compile(r"\btrade[\s-]?in|\btrade (my|an?)\b|\bsell my\b|\bswap\b", re.I)
_MEETING = re.compile(r"\b(meeting|appointment|book|call me|talk to (a|someone)|human|person)\b", re.I)
_PRODUCTS = re.compile(r"\b(product|phone|laptop|buy|sell|price|cheap|under|below|stock|model|catalog|offer)", re.I)
_PRICE = re.compile(r"(?:under|below|less than|max(?:imum)?|up to)\s*\$?\s*(\d+(?:[.,]\d{1,2})?)", re.I)


@dataclass
class DemoReply:
    text: str
    ui: list[dict[str, Any]] = field(default_factory=list)


def demo_url(*, base: str, public_id: str, stream: bool = True) -> str:
    return base.rstrip("/") + PATH.format(public_id=public_id) + ("" if stream else "?stream=0")


def _config(widget: Widget) -> dict[str, Any]:
    version = widget.published_version
    return version.config if version is not None else widget.config


def demo_reply(*, widget: Widget, text: str) -> DemoReply:
    """What the demo workflow answers to one visitor message."""
    config = _config(widget)
    title = config["appearance"]["n8n"].get("title") or widget.name
    if _TRADE_IN.search(text):
        device = ""
        devices = config.get("tools", {}).get("trade_in_devices", [])
        for name in devices:
            if name.lower() in text.lower():
                device = name
        return DemoReply(
            "Happy to help with a trade-in. Tell me about your device in the form below and we "
            "will send you a quote within a day.",
            [ui_events.trade_in_form(device=device, devices=devices)],
        )
    booking = config.get("tools", {}).get("booking_url", "")
    if _MEETING.search(text) and booking:
        return DemoReply(
            "Of course. Pick a time that suits you and someone from the team will call you.",
            [ui_events.meeting_link(url=booking)],
        )
    if _GREETING.search(text) and len(text.split()) <= 4:
        return DemoReply(
            f"Hello! I'm the demo assistant of **{title}**. Ask me about our products, opening "
            "hours, returns or trade-ins."
        )
    max_price = None
    match = _PRICE.search(text)
    if match:
        max_price = Decimal(match.group(1).replace(",", "."))
    if _PRODUCTS.search(text) or max_price is not None:
        products = product_search(widget=widget, query=text, max_price=max_price)
        if not products:  # no product named: show what there is (within the price, if one was given)
            products = product_search(widget=widget, query="", max_price=max_price)
        if products:
            names = ", ".join(f"**{p.title}**" for p in products)
            symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(products[0].currency, products[0].currency + " ")
            limit = f" under {symbol}{max_price:g}" if max_price is not None else ""
            return DemoReply(
                f"Here {'is' if len(products) == 1 else 'are'} {len(products)} option"
                f"{'s' if len(products) != 1 else ''}{limit}: {names}.",
                [ui_events.product_cards(products)],
            )
    entries = knowledge_search(widget=widget, query=text, limit=1)
    if entries:
        return DemoReply(entries[0].answer)
    return DemoReply(
        "I'm the demo workflow built into Switchboard, so I only know this widget's knowledge and products. "
        "Try “Phones under $500?” or “How do trade-ins work?”. To use your own n8n workflow, paste its Chat "
        "Trigger URL under Connection."
    )


def _memory_key(public_id: str, session_id: str) -> str:
    return f"sb:demo-n8n:{public_id}:{session_id[:200]}"


def demo_history(*, public_id: str, session_id: str) -> list[dict[str, Any]]:
    """The session's memory as n8n's loadPreviousSession returns it (LangChain messages)."""
    return cache.get(_memory_key(public_id, session_id)) or []


def demo_remember(*, public_id: str, session_id: str, user: str, assistant: str) -> None:
    memory = demo_history(public_id=public_id, session_id=session_id)
    memory += [
        {
            "lc": 1,
            "type": "constructor",
            "id": ["langchain_core", "messages", "HumanMessage"],
            "kwargs": {"content": user, "additional_kwargs": {}, "response_metadata": {}},
        },
        {
            "lc": 1,
            "type": "constructor",
            "id": ["langchain_core", "messages", "AIMessage"],
            "kwargs": {"content": assistant, "additional_kwargs": {}, "response_metadata": {}},
        },
    ]
    cache.set(_memory_key(public_id, session_id), memory[-MAX_MEMORY:], MEMORY_SECONDS)


def demo_chunks(text: str) -> list[str]:
    """The reply cut into the small pieces a streaming model would send (words with their spacing)."""
    return re.findall(r"\S+\s*|\s+", text)
