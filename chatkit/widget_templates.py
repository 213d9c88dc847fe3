"""Our UI events (widgets/ui_events.py) as ChatKit widgets: one mapping, the same events voice and chat render.

| UI event           | ChatKit widget                                                                |
|--------------------|-------------------------------------------------------------------------------|
| ui.product_cards   | ListView: per product Row[Image?, Col[Text title, Caption price, Badge?]]      |
| ui.trade_in_form   | Card > Form (onSubmitAction `trade_in.submit`, handled by the server)          |
| ui.demo_clip       | Card: Title, Text, Button "Watch the demo"                                     |
| ui.meeting_link    | Card: Title, Text, Button "Pick a time"                                        |

Links open through a client action (`open_url`, handler "client"): the page opens https URLs only,
and a URL that is not https never gets a button here either. Built as plain dicts validated by the
SDK's `DynamicWidgetRoot` (the named widget classes are deprecated); `build()` checks only the root
type, so chatkit/tests/test_widget_templates.py pins each rendered shape.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from chatkit.widgets import DynamicWidgetRoot
from widgets.ui_events import TRADE_IN_FIELDS

OPEN_URL = "open_url"
TRADE_IN_SUBMIT = "trade_in.submit"
TRADE_IN_CONDITIONS: list[str] = next(f["options"] for f in TRADE_IN_FIELDS if f["name"] == "condition")


def https_url(value: Any) -> str:
    """The URL when it is an absolute https URL, else ""."""
    if not isinstance(value, str) or len(value) > 2000:
        return ""
    parts = urlsplit(value.strip())
    return value.strip() if parts.scheme == "https" and parts.netloc else ""


def _open(url: str) -> dict[str, Any]:
    return {"type": OPEN_URL, "handler": "client", "payload": {"url": url}}


def _price(product: dict[str, Any]) -> str:
    return f"{product.get('currency') or ''} {product['price']}".strip() if product.get("price") else ""


def product_cards(event: dict[str, Any]) -> dict[str, Any]:
    items = []
    for product in event.get("products") or []:
        text: list[dict[str, Any]] = [
            {"type": "Text", "value": product.get("title") or "", "weight": "semibold", "maxLines": 2}
        ]
        if _price(product):
            text.append({"type": "Caption", "value": _price(product)})
        if not product.get("in_stock", True):
            text.append({"type": "Badge", "label": "Out of stock", "color": "warning", "size": "sm"})
        row: list[dict[str, Any]] = []
        if https_url(product.get("image_url")):
            row.append(
                {
                    "type": "Image",
                    "src": https_url(product["image_url"]),
                    "alt": product.get("title") or "",
                    "size": 48,
                    "radius": "sm",
                    "fit": "cover",
                }
            )
        row.append({"type": "Col", "gap": 0, "flex": 1, "children": text})
        item: dict[str, Any] = {
            "type": "ListViewItem",
            "key": f"product-{product.get('id')}",
            "gap": 3,
            "align": "center",
            "children": row,
        }
        if https_url(product.get("url")):
            item["onClickAction"] = _open(https_url(product["url"]))
        items.append(item)
    return {"type": "ListView", "limit": 4, "children": items}


def trade_in_form(event: dict[str, Any]) -> dict[str, Any]:
    devices = [d for d in event.get("devices") or [] if isinstance(d, str) and d]
    prefill = event.get("device") or ""
    if devices:
        device: dict[str, Any] = {
            "type": "Select",
            "name": "device",
            "placeholder": "Your device",
            "block": True,
            "options": [{"label": d, "value": d} for d in devices],
        }
        if prefill in devices:
            device["defaultValue"] = prefill
    else:
        device = {
            "type": "Input",
            "name": "device",
            "placeholder": "Your device",
            "required": True,
            "defaultValue": prefill,
        }
    fields = [
        {"type": "Label", "value": "Device", "fieldName": "device"},
        device,
        {"type": "Label", "value": "Condition", "fieldName": "condition"},
        {
            "type": "Select",
            "name": "condition",
            "placeholder": "Condition",
            "block": True,
            "options": [{"label": c, "value": c} for c in TRADE_IN_CONDITIONS],
        },
        {"type": "Label", "value": "Your name", "fieldName": "name"},
        {"type": "Input", "name": "name", "required": True, "placeholder": "Name"},
        {"type": "Label", "value": "Email", "fieldName": "email"},
        {"type": "Input", "name": "email", "inputType": "email", "required": True, "placeholder": "you@example.com"},
        {"type": "Label", "value": "Phone (optional)", "fieldName": "phone"},
        {"type": "Input", "name": "phone", "inputType": "tel", "placeholder": "Phone"},
        {"type": "Button", "submit": True, "label": "Get a quote", "style": "primary", "block": True},
    ]
    return {
        "type": "Card",
        "size": "md",
        "key": "trade-in",
        "children": [
            {"type": "Title", "value": "Trade in your device", "size": "sm"},
            {
                "type": "Form",
                "direction": "col",
                "gap": 2,
                "children": fields,
                "onSubmitAction": {"type": TRADE_IN_SUBMIT, "handler": "server", "payload": {}},
            },
        ],
    }


def trade_in_thanks(*, name: str, device: str, condition: str) -> dict[str, Any]:
    first = name.split()[0] if name.split() else "there"
    return {
        "type": "Card",
        "size": "md",
        "key": "trade-in",
        "status": {"text": "Sent", "icon": "check"},
        "children": [
            {"type": "Title", "value": f"Thanks {first}!", "size": "sm"},
            {"type": "Text", "value": f"We have your {device} ({condition.lower()}). The team will email you a quote."},
        ],
    }


def _link_card(title: str, text: str, url: str, label: str) -> dict[str, Any]:
    children: list[dict[str, Any]] = [{"type": "Title", "value": title, "size": "sm"}]
    if text:
        children.append({"type": "Text", "value": text})
    if https_url(url):
        children.append({"type": "Button", "label": label, "style": "primary", "onClickAction": _open(https_url(url))})
    return {"type": "Card", "size": "sm", "children": children}


def demo_clip(event: dict[str, Any]) -> dict[str, Any]:
    return _link_card(
        event.get("title") or event.get("topic") or "Demo",
        f"A short demo of {event.get('topic')}.",
        event.get("url") or "",
        "Watch the demo",
    )


def meeting_link(event: dict[str, Any]) -> dict[str, Any]:
    return _link_card(
        event.get("title") or "Book a meeting", "Pick any time that suits you.", event.get("url") or "", "Pick a time"
    )


BUILDERS = {
    "ui.product_cards": product_cards,
    "ui.trade_in_form": trade_in_form,
    "ui.demo_clip": demo_clip,
    "ui.meeting_link": meeting_link,
}


def widget_for_event(event: dict[str, Any] | None) -> DynamicWidgetRoot | None:
    """The ChatKit widget for one UI event, or None (unknown type, or nothing to show)."""
    builder = BUILDERS.get((event or {}).get("type"))
    if builder is None:
        return None
    shape = builder(event)
    if not shape.get("children"):
        return None
    return DynamicWidgetRoot.model_validate(shape)


def widget_root(shape: dict[str, Any]) -> DynamicWidgetRoot:
    return DynamicWidgetRoot.model_validate(shape)
