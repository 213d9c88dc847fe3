from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from widgets.models import Conversation, KnowledgeEntry, Lead, Message, Product, Widget, WidgetVersion


class WidgetVersionInline(admin.TabularInline):
    model = WidgetVersion
    extra = 0
    fields = ["number", "widget_type", "published_at", "published_by", "note"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Widget)
class WidgetAdmin(admin.ModelAdmin):
    """Read-mostly: agencies edit widgets in the configurator; staff only rename here."""

    list_display = ["name", "public_id", "widget_type", "license", "published_number", "updated_at"]
    list_filter = ["widget_type", "license__agency"]
    search_fields = ["name", "public_id", "license__key", "license__client_name"]
    fields = [
        "name",
        "public_id",
        "license",
        "widget_type",
        "published_version",
        "revision",
        "config",
        "created_by",
        "created_at",
        "updated_at",
    ]
    readonly_fields = [f for f in fields if f != "name"]
    inlines = [WidgetVersionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Published")
    def published_number(self, obj: Widget) -> str:
        return f"v{obj.published_version.number}" if obj.published_version else "—"


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ["role", "text", "created_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "widget", "channel", "visitor_id", "started_at", "ended_at", "end_reason", "cost_usd"]
    list_filter = ["channel", "is_preview"]
    search_fields = ["session_id", "visitor_id", "widget__name"]
    readonly_fields = [f.name for f in Conversation._meta.fields]
    inlines = [MessageInline]


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "widget", "source", "delivery_status", "created_at"]
    list_filter = ["delivery_status", "source"]
    search_fields = ["name", "email", "phone"]


admin.site.register(KnowledgeEntry, list_display=["question", "widget"], search_fields=["question", "answer"])
admin.site.register(Product, list_display=["title", "price", "widget"], search_fields=["title", "sku"])
admin.site.site_header = "Switchboard staff"
admin.site.site_title = "Switchboard"
