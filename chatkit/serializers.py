"""Request/response shapes of the ChatKit preview-options endpoint (validation + OpenAPI)."""

from rest_framework import serializers

from licenses.api import JSONObjectField, StrictCharField


class PreviewOptionsRequestSerializer(serializers.Serializer):
    widget = StrictCharField(max_length=40, help_text="The widget's public id.")
    config = JSONObjectField(
        required=False,
        default=dict,
        help_text="The unsaved draft config, partial or whole: merged over the saved draft, never saved.",
    )


class PreviewOptionsSerializer(serializers.Serializer):
    options = serializers.JSONField(help_text="ChatKit setOptions values (everything but `api`).")
    autoColorScheme = serializers.BooleanField(help_text="Follow prefers-color-scheme (ChatKit knows light/dark).")
