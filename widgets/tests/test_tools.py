"""Server-side tools: each with the tenant's data; an outsider's rows are never found."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from widgets.config_schema import config_normalize
from widgets.models import Lead, Product
from widgets.services.widgets import widget_publish
from widgets.tests.factories import KnowledgeEntryFactory, ProductFactory, WidgetFactory
from widgets.tools import TOOLS, tool_run, tools_enabled

ALL_ON = dict.fromkeys(TOOLS, True)


@pytest.fixture
def shop(license_a, owner):
    widget = WidgetFactory(
        license=license_a,
        config=config_normalize(
            {
                "voice": {"enabled": True, "tools": ALL_ON},
                "tools": {
                    "booking_url": "https://cal.example.com/a",
                    "trade_in_devices": ["iPhone 12"],
                    "demo_clips": [{"topic": "camera", "title": "Night mode", "url": "https://v.example.com/cam"}],
                },
            }
        ),
    )
    widget_publish(widget=widget, user=owner, membership=owner.memberships.get())
    widget.refresh_from_db()
    KnowledgeEntryFactory(
        widget=widget,
        question="What is your returns policy?",
        answer="Return any phone within 30 days for a full refund.",
        tags="returns refund",
    )
    KnowledgeEntryFactory(widget=widget, question="When are you open?", answer="Monday to Friday, 9 to 5.")
    ProductFactory(widget=widget, title="Phone X", price=Decimal("449.00"), description="A great phone")
    ProductFactory(widget=widget, title="Phone Ultra", price=Decimal("999.00"))
    ProductFactory(widget=widget, title="Laptop Air", price=Decimal("899.00"))
    return widget


@pytest.fixture
def rival(license_b, outsider):
    """Agency B's widget with data that must never leak into agency A's tools."""
    widget = WidgetFactory(license=license_b, config=config_normalize({"voice": {"enabled": True, "tools": ALL_ON}}))
    widget_publish(widget=widget, user=outsider, membership=outsider.memberships.get())
    KnowledgeEntryFactory(widget=widget, question="Secret warranty policy", answer="RIVAL-ONLY warranty answer")
    ProductFactory(widget=widget, title="Rival Phone Cheap", price=Decimal("10.00"))
    return widget


def run(widget, tool, **args):
    return tool_run(name=tool, widget=widget, conversation=None, arguments=json.dumps(args))


@pytest.mark.django_db
class TestSearchKnowledge:
    def test_finds_the_best_entry(self, shop, rival):
        result = run(shop, "search_knowledge", query="Can I return my phone for a refund?")
        assert result.ok and "30 days" in result.speak
        assert result.data["matches"][0]["question"] == "What is your returns policy?"

    def test_outsider_knowledge_is_never_found(self, shop, rival):
        result = run(shop, "search_knowledge", query="secret warranty policy")
        assert "RIVAL" not in json.dumps(result.data) and "RIVAL" not in result.speak

    def test_nothing_found_is_said_politely(self, shop):
        result = run(shop, "search_knowledge", query="zebra")
        assert result.data["matches"] == [] and "don't have" in result.speak


@pytest.mark.django_db
class TestSearchProducts:
    def test_cards_under_a_price(self, shop, rival):
        result = run(shop, "search_products", query="phones", max_price=500)
        assert result.ui_event["type"] == "ui.product_cards"
        assert [p["title"] for p in result.ui_event["products"]] == ["Phone X"]
        assert "Phone X" in result.speak

    def test_outsider_products_are_never_found(self, shop, rival):
        result = run(shop, "search_products", query="rival phone cheap")
        titles = [p["title"] for p in (result.ui_event or {}).get("products", [])]
        assert result.ok and "Rival Phone Cheap" not in titles
        assert "Rival Phone Cheap" in [p.title for p in Product.objects.filter(widget=rival)]  # it exists, elsewhere

    def test_bad_arguments_get_a_spoken_fallback(self, shop):
        for arguments in (
            "{not json",
            json.dumps({"max_price": "cheap"}),
            json.dumps(["x"]),
            json.dumps({"query": "x", "max_price": -5}),
        ):
            result = tool_run(name="search_products", widget=shop, conversation=None, arguments=arguments)
            assert not result.ok and result.ui_event is None and result.speak


@pytest.mark.django_db
class TestOtherTools:
    def test_trade_in_form(self, shop):
        result = run(shop, "start_trade_in", device="iPhone 12")
        assert result.ui_event == {
            **result.ui_event,
            "type": "ui.trade_in_form",
            "device": "iPhone 12",
            "devices": ["iPhone 12"],
        }

    def test_demo_clip_from_config(self, shop):
        result = run(shop, "get_demo_clip", topic="the camera at night")
        assert result.ui_event == {
            "type": "ui.demo_clip",
            "topic": "camera",
            "title": "Night mode",
            "url": "https://v.example.com/cam",
        }
        assert run(shop, "get_demo_clip", topic="weather").ui_event is None

    def test_tools_read_the_config_the_agent_runs_on(self, shop):
        """A preview runs on the unsaved draft: its devices, clips and booking link, not the published ones."""
        draft = config_normalize(
            {
                "voice": {"enabled": True},
                "tools": {
                    "enabled": ALL_ON,
                    "booking_url": "https://cal.example.com/draft",
                    "trade_in_devices": ["Pixel 9"],
                    "demo_clips": [{"topic": "battery", "title": "All day", "url": "https://v.example.com/bat"}],
                },
            }
        )

        def on_draft(tool, **args):
            return tool_run(name=tool, widget=shop, conversation=None, arguments=json.dumps(args), config=draft)

        assert on_draft("start_trade_in", device="Pixel 9").ui_event["devices"] == ["Pixel 9"]
        assert on_draft("get_demo_clip", topic="battery life").ui_event["url"] == "https://v.example.com/bat"
        assert on_draft("get_demo_clip", topic="the camera at night").ui_event is None
        assert on_draft("create_meeting_link", name="Ann").ui_event["url"] == "https://cal.example.com/draft"
        # The published config still answers everywhere else.
        assert run(shop, "start_trade_in", device="x").ui_event["devices"] == ["iPhone 12"]

    def test_meeting_link_from_config(self, shop):
        result = run(shop, "create_meeting_link", name="Ann", email="ann@example.com")
        assert result.ui_event == {
            "type": "ui.meeting_link",
            "url": "https://cal.example.com/a",
            "title": "Book a meeting",
            "name": "Ann",
            "email": "ann@example.com",
        }

    def test_log_lead_saves_for_this_widget(self, shop, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            result = run(shop, "log_lead", name="Ann Lee", email="ann@example.com", interest="Phone X")
        assert result.ok and "Ann" in result.speak
        lead = Lead.objects.get()
        assert (lead.widget, lead.name, lead.email, lead.interest) == (shop, "Ann Lee", "ann@example.com", "Phone X")
        assert lead.delivery_status == Lead.Delivery.SKIPPED  # agency A has no CRM webhook

    def test_log_lead_with_a_bad_email_asks_again(self, shop):
        result = run(shop, "log_lead", name="Ann", email="not-an-email")
        assert not result.ok and "email" in result.speak and not Lead.objects.exists()

    def test_disabled_tool_is_refused(self, widget_a):
        assert [t.name for t in tools_enabled(widget_a.published_version.config)] == [
            "search_knowledge",
            "search_products",
        ]
        result = run(widget_a, "log_lead", name="A", email="a@example.com")
        assert not result.ok and not Lead.objects.exists()

    def test_unknown_tool(self, shop):
        result = run(shop, "rm_rf")
        assert not result.ok and result.ui_event is None and result.data == {"error": "unknown_tool"}
