from decimal import Decimal
from typing import Any

import factory

from licenses.tests.factories import LicenseFactory
from widgets.config_schema import config_normalize
from widgets.models import KnowledgeEntry, Product, Widget
from widgets.services.widgets import widget_publish, widget_update


class WidgetFactory(factory.django.DjangoModelFactory):
    """A saved widget; pass `provider="chatkit"` for a ChatKit one. Publish with widgets.services."""

    class Meta:
        model = Widget

    class Params:
        provider = "n8n"

    license = factory.SubFactory(LicenseFactory)
    name = factory.Sequence(lambda n: f"Widget {n}")
    config = factory.LazyAttribute(lambda o: config_normalize({"connection": {"provider": o.provider}}))
    widget_type = factory.LazyAttribute(lambda o: o.config["connection"]["provider"])


class KnowledgeEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = KnowledgeEntry

    widget = factory.SubFactory(WidgetFactory)
    question = factory.Sequence(lambda n: f"Question {n}?")
    answer = "An answer."


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    widget = factory.SubFactory(WidgetFactory)
    title = factory.Sequence(lambda n: f"Phone {n}")
    price = Decimal("399.00")
    url = "https://shop.example.com/p"
    image_url = "https://shop.example.com/p.png"


def publish(widget, owner, *, config: dict | None = None, secrets: dict | None = None):
    """Save `config` into the draft (merge) and publish it as the owner; returns the refreshed widget."""
    membership = owner.memberships.get()
    if config is not None or secrets is not None:
        widget = widget_update(widget=widget, membership=membership, config=config, secrets=secrets)
    widget_publish(widget=widget, user=owner, membership=membership)
    widget.refresh_from_db()
    return widget


def n8n_config(webhook: str, **n8n: Any) -> dict[str, Any]:
    return {
        "connection": {"provider": "n8n", "n8n": {"webhook_url": webhook, **n8n}},
        "appearance": {"n8n": {"title": "Acme Phones", "subtitle": "Ask us anything"}},
        "behaviour": {"starter_prompts": ["Phones under $500?"], "greeting": "Hi! How can I help?"},
    }
