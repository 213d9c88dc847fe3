"""Structured UI events: the one shape for cards and forms, in text chat, ChatKit and voice.

A tool (widgets/tools.py), an n8n reply (`{"output": "...", "ui": [<event>, ...]}`) or the voice
relay produces these dicts; the widget bundle (static/widget/) renders them identically on every
channel. Every event has `type`; fields are plain JSON. Keep this module and the README's
"UI events" table in step.

| type               | fields                                                                           |
|--------------------|----------------------------------------------------------------------------------|
| ui.product_cards   | products: [{id, title, description, price ("449.00"|null), currency, image_url, url, in_stock}] |
| ui.trade_in_form   | device (prefill or ""), devices ([str] choices), fields ([{name,label,type,required}]) |
| ui.demo_clip       | topic, title, url                                                                |
| ui.meeting_link    | url, title, name, email                                                          |
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

UI_EVENT_TYPES = ("ui.product_cards", "ui.trade_in_form", "ui.demo_clip", "ui.meeting_link")

TRADE_IN_FIELDS = [
    {"name": "device", "label": "Device", "type": "text", "required": True},
    {
        "name": "condition",
        "label": "Condition",
        "type": "select",
        "required": True,
        "options": ["Like new", "Good", "Fair", "Broken"],
    },
    {"name": "name", "label": "Your name", "type": "text", "required": True},
    {"name": "email", "label": "Email", "type": "email", "required": True},
    {"name": "phone", "label": "Phone", "type": "tel", "required": False},
]


def product_cards(products: Iterable[Any]) -> dict[str, Any]:
    return {
        "type": "ui.product_cards",
        "products": [
            {
                "id": str(p.pk),
                "title": p.title,
                "description": p.description[:300],
                "price": None if p.price is None else f"{p.price:.2f}",
                "currency": p.currency,
                "image_url": p.image_url,
                "url": p.url,
                "in_stock": p.in_stock,
            }
            for p in products
        ],
    }


def trade_in_form(*, device: str = "", devices: list[str] | None = None) -> dict[str, Any]:
    return {"type": "ui.trade_in_form", "device": device, "devices": list(devices or []), "fields": TRADE_IN_FIELDS}


def demo_clip(*, topic: str, title: str, url: str) -> dict[str, Any]:
    return {"type": "ui.demo_clip", "topic": topic, "title": title or topic, "url": url}


def meeting_link(*, url: str, title: str = "Book a meeting", name: str = "", email: str = "") -> dict[str, Any]:
    return {"type": "ui.meeting_link", "url": url, "title": title, "name": name, "email": email}


def ui_events_clean(events: Any) -> list[dict[str, Any]]:
    """Keep only well-formed events of known types (from an upstream we do not control, e.g. n8n)."""
    if not isinstance(events, list):
        return []
    return [e for e in events if isinstance(e, dict) and e.get("type") in UI_EVENT_TYPES][:10]
