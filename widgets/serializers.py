from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from licenses.api import INT32_MAX, JSONObjectField, StrictCharField
from widgets.config_schema import CONFIG_SCHEMA
from widgets.models import Widget, WidgetVersion
from widgets.selectors import secrets_status


@extend_schema_field(CONFIG_SCHEMA)
class WidgetConfigField(JSONObjectField):
    """A widget config (partial on input: defaults and the draft fill the rest), documented with the
    one config schema (widgets.config_schema.CONFIG_SCHEMA) so API clients and the fuzzer know it."""


class WidgetVersionSerializer(serializers.ModelSerializer):
    published_by = serializers.CharField(source="published_by.username", default=None, read_only=True, allow_null=True)
    config = WidgetConfigField(read_only=True)

    class Meta:
        model = WidgetVersion
        fields = ["number", "widget_type", "config", "note", "published_at", "published_by"]
        read_only_fields = fields


class WidgetSerializer(serializers.ModelSerializer):
    license = serializers.CharField(source="license.key", read_only=True)
    published_version = serializers.IntegerField(
        source="published_version.number",
        default=None,
        read_only=True,
        allow_null=True,
        help_text="null until first published.",
    )
    has_unpublished_changes = serializers.BooleanField(read_only=True)
    secrets = serializers.SerializerMethodField(help_text="Whether each secret is set, and its last 4 characters.")
    config = WidgetConfigField(read_only=True)

    class Meta:
        model = Widget
        fields = [
            "public_id",
            "license",
            "name",
            "widget_type",
            "config",
            "revision",
            "published_version",
            "has_unpublished_changes",
            "secrets",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_secrets(self, obj: Widget) -> dict:
        return secrets_status(widget=obj)


class WidgetCreateSerializer(serializers.Serializer):
    license = StrictCharField(max_length=64, help_text="The license key the widget belongs to.")
    name = StrictCharField(max_length=200)
    config = WidgetConfigField(required=False, help_text="Partial config; defaults fill the rest.")
    secrets = JSONObjectField(required=False, help_text="Write-only provider credentials.")


class WidgetUpdateSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200, required=False)
    config = WidgetConfigField(required=False, help_text="Merged into the draft on PATCH, replaces on PUT.")
    secrets = JSONObjectField(required=False, help_text='Write-only: a string sets, "" clears.')
    revision = serializers.IntegerField(
        required=False, min_value=0, max_value=INT32_MAX, help_text="The revision you edited; 409 if stale."
    )


class PublishSerializer(serializers.Serializer):
    note = StrictCharField(max_length=300, required=False, allow_blank=True)
    revision = serializers.IntegerField(required=False, min_value=0, max_value=INT32_MAX)


class RollbackSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, max_value=INT32_MAX)
