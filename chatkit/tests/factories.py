"""Factories of the chatkit tests: ChatKit widgets (hosted and server mode) with the tenant's test key."""

from __future__ import annotations

from widgets.services.widgets import widget_publish, widget_update
from widgets.tests.factories import WidgetFactory

TENANT_KEY = "sk-tenant-test-key-1234"


PLATFORM_KEY = "sk-platform-test-key-9876"


WORKFLOW_ID = "wf_SECRETWORKFLOW"


HOSTED_CONFIG = {
    "connection": {"provider": "chatkit", "chatkit": {"mode": "hosted", "workflow_id": WORKFLOW_ID}},
    "appearance": {
        "chatkit": {
            "color_scheme": "dark",
            "grayscale_hue": 210,
            "grayscale_tint": 4,
            "grayscale_shade": 2,
            "accent_color": "#0f766e",
            "accent_level": 2,
            "radius": "soft",
            "density": "compact",
            "base_font_size": 15,
        }
    },
    "behaviour": {
        "greeting": "Welcome to the shop!",
        "starter_prompts": ["Phones under $500?", "Trade-ins?"],
        "placeholder": "Ask the shop…",
        "file_uploads": True,
        "history": False,
        "locale": "de-DE",
    },
}


SERVER_CONFIG = {
    "connection": {
        "provider": "chatkit",
        "chatkit": {
            "mode": "server",
            "model": "gpt-6-sol",
            "instructions": "You are the assistant of Demo Shop. Be brief.",
        },
    },
    "appearance": HOSTED_CONFIG["appearance"],
    "behaviour": {**HOSTED_CONFIG["behaviour"], "history": True},
    "voice": {"business_facts": "Open Monday to Friday, 9 to 5."},
    "tools": {
        "enabled": {
            "search_knowledge": True,
            "search_products": True,
            "start_trade_in": True,
            "get_demo_clip": True,
            "create_meeting_link": True,
            "log_lead": True,
        },
        "booking_url": "https://cal.example.com/demo-shop",
        "trade_in_devices": ["iPhone 12", "Pixel 7"],
        "demo_clips": [
            {"topic": "trade-ins", "title": "How trade-ins work", "url": "https://videos.example.com/trade-ins.mp4"}
        ],
    },
}


def make_chatkit_widget(*, license, user, config=None, secrets=None, publish=True):
    widget = WidgetFactory(license=license, provider="chatkit", created_by=user)
    membership = user.memberships.get(agency=license.agency)
    widget = widget_update(
        widget=widget,
        membership=membership,
        config=config or HOSTED_CONFIG,
        secrets={"openai_api_key": TENANT_KEY} if secrets is None else secrets,
    )
    if publish:
        widget_publish(widget=widget, user=user, membership=membership)
    widget.refresh_from_db()
    return widget
