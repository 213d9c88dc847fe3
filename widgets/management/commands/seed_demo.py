"""Idempotent demo data: an agency, an owner, a staff superuser, a license and two published widgets."""

from __future__ import annotations

import os
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from licenses.models import Agency, License, Membership
from licenses.services import license_create
from widgets.demo_n8n import PATH as DEMO_N8N_PATH
from widgets.demo_n8n import demo_url
from widgets.models import KnowledgeEntry, Product, Widget
from widgets.services.widgets import widget_chatkit_migrate, widget_create, widget_publish, widget_update

OWNER = ("owner", "owner@demo.test", "demo-owner-pass")
STAFF = ("staff", "staff@demo.test", "demo-staff-pass")

# The demo n8n widget talks to the built-in demo Chat Trigger (widgets/demo_n8n.py) of this server,
# so chatting works on first run without n8n; its URL (with this server's port) is set after creation.
LEGACY_N8N_URL = "http://127.0.0.1:5678/webhook/demo/chat"
N8N_CONFIG = {
    "connection": {"provider": "n8n", "n8n": {"webhook_url": "", "streaming": True}},
    "appearance": {"n8n": {"title": "Demo Store", "subtitle": "Ask about phones and trade-ins"}},
    "behaviour": {"starter_prompts": ["Phones under $500?", "How do trade-ins work?"]},
    "voice": {
        "enabled": True,
        "tools": {
            "search_knowledge": True,
            "search_products": True,
            "start_trade_in": True,
            "create_meeting_link": True,
            "log_lead": True,
        },
    },
    "tools": {"booking_url": "https://cal.example.com/demo-store", "trade_in_devices": ["iPhone 12", "Pixel 6"]},
}
# The demo ChatKit widget runs on our own ChatKit server (hosted Agent Builder workflows are gone):
# the widget's instructions, knowledge, products and the same tools voice uses. It answers when an
# OpenAI key is set (OPENAI_API_KEY, or the widget's own key in the configurator).
CHATKIT_CONFIG = {
    "connection": {
        "provider": "chatkit",
        "chatkit": {
            "mode": "server",
            "instructions": "You are the Demo Store's shopping assistant. Help visitors find phones and accessories, "
            "explain trade-ins and book a call with the team. Be friendly and brief.",
        },
    },
    "appearance": {"chatkit": {"accent_color": "#0f766e", "radius": "round"}},
    "behaviour": {
        "greeting": "Welcome to the Demo Store assistant.",
        "starter_prompts": ["What's on sale?", "Phones under $500?", "How do trade-ins work?"],
    },
    "tools": {
        "enabled": {
            "search_knowledge": True,
            "search_products": True,
            "start_trade_in": True,
            "create_meeting_link": True,
            "log_lead": True,
        },
        "booking_url": "https://cal.example.com/demo-store",
        "trade_in_devices": ["iPhone 12", "Pixel 6"],
    },
}


class Command(BaseCommand):
    help = "Create demo data (idempotent). Prints the logins it sets."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Allow default passwords with DEBUG off.")
        parser.add_argument(
            "--port",
            type=int,
            default=int(os.environ.get("PORT") or 8000),
            help="Port this server listens on (the demo n8n widget calls its demo workflow there).",
        )

    @transaction.atomic
    def handle(self, *args, force: bool = False, port: int = 8000, **options):
        if not settings.DEBUG and not force:
            raise CommandError("DEBUG is off: refusing to create users with default passwords. Use --force.")
        User = get_user_model()
        owner, owner_new = User.objects.get_or_create(username=OWNER[0], defaults={"email": OWNER[1]})
        if owner_new:
            owner.set_password(OWNER[2])
            owner.save()
        staff, staff_new = User.objects.get_or_create(
            username=STAFF[0], defaults={"email": STAFF[1], "is_staff": True, "is_superuser": True}
        )
        if staff_new:
            staff.set_password(STAFF[2])
            staff.save()

        agency, _ = Agency.objects.get_or_create(slug="demo-agency", defaults={"name": "Demo Agency"})
        membership, _ = Membership.objects.get_or_create(
            user=owner, agency=agency, defaults={"role": Membership.Role.OWNER}
        )
        license = License.objects.filter(agency=agency, client_name="Demo Store").first()
        if license is None:
            license = license_create(
                agency=agency,
                client_name="Demo Store",
                allowed_domains=["localhost", "127.0.0.1"],
                notes="Created by seed_demo.",
            )
        for name, config in (("Demo n8n chat", N8N_CONFIG), ("Demo ChatKit", CHATKIT_CONFIG)):
            widget = Widget.objects.filter(license=license, name=name).first()
            if widget is None:
                widget = widget_create(license=license, user=owner, membership=membership, name=name, config=config)
                widget_publish(widget=widget, user=owner, membership=membership, note="Seeded")
            self._seed_data(widget)
            if widget.widget_type == "chatkit" and widget.config["connection"]["chatkit"]["mode"] == "hosted":
                # Seeded before Agent Builder shut down: move it to our ChatKit server, as the configurator does.
                widget_chatkit_migrate(widget=widget, user=owner, membership=membership)
            if widget.widget_type == "n8n":
                self._demo_webhook(widget, owner, membership, base=f"http://127.0.0.1:{port}")

        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(f"  agency owner : {OWNER[0]} / {OWNER[2]}   (sign in at /app/)")
        self.stdout.write(f"  staff        : {STAFF[0]} / {STAFF[2]}   (sign in at /admin/)")
        self.stdout.write(f"  license key  : {license.key}")
        for widget in license.widgets.order_by("id"):
            self.stdout.write(f"  widget       : {widget.public_id} ({widget.widget_type}) {widget.name}")

    def _demo_webhook(self, widget: Widget, owner, membership: Membership, *, base: str) -> None:
        """Point the demo widget at this server's demo workflow (again if the port changed), unless
        someone connected it to a real n8n since."""
        url = demo_url(base=base, public_id=widget.public_id)
        current = widget.config["connection"]["n8n"]["webhook_url"]
        ours = current in ("", LEGACY_N8N_URL) or DEMO_N8N_PATH.format(public_id=widget.public_id) in current
        if not ours or current == url:
            return
        widget = widget_update(
            widget=widget,
            membership=membership,
            config={"connection": {"n8n": {"webhook_url": url, "streaming": True}}},
        )
        widget_publish(widget=widget, user=owner, membership=membership, note="Demo workflow of this server")
        if not settings.DEBUG:
            self.stdout.write(self.style.WARNING("  The demo n8n workflow only answers with DEBUG on."))

    def _seed_data(self, widget: Widget) -> None:
        if not widget.knowledge.exists():
            KnowledgeEntry.objects.bulk_create(
                [
                    KnowledgeEntry(
                        widget=widget,
                        question="What are your opening hours?",
                        answer="We are open Monday to Saturday, 9am to 6pm.",
                        position=1,
                    ),
                    KnowledgeEntry(
                        widget=widget,
                        question="How do trade-ins work?",
                        answer="Bring or ship your old phone; we quote within a day and credit your order.",
                        position=2,
                    ),
                    KnowledgeEntry(
                        widget=widget,
                        question="What is your return policy?",
                        answer="Returns are free within 30 days of delivery.",
                        position=3,
                    ),
                ]
            )
        if not widget.products.exists():
            Product.objects.bulk_create(
                [
                    Product(
                        widget=widget,
                        sku="PX-8A",
                        title="Pixel 8a",
                        price=Decimal("449.00"),
                        description="6.1-inch, great camera",
                        url="https://shop.example.com/pixel-8a",
                        image_url="https://shop.example.com/img/pixel-8a.png",
                    ),
                    Product(
                        widget=widget,
                        sku="IP-15",
                        title="iPhone 15",
                        price=Decimal("699.00"),
                        description="A16 chip, USB-C",
                        url="https://shop.example.com/iphone-15",
                        image_url="https://shop.example.com/img/iphone-15.png",
                    ),
                    Product(
                        widget=widget,
                        sku="GS-A55",
                        title="Galaxy A55",
                        price=Decimal("399.00"),
                        description="Long battery life",
                        url="https://shop.example.com/galaxy-a55",
                        image_url="https://shop.example.com/img/galaxy-a55.png",
                    ),
                ]
            )
