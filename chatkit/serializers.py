"""Request/response shapes of the ChatKit session endpoints (validation + OpenAPI)."""

from rest_framework import serializers


class PreviewSessionRequestSerializer(serializers.Serializer):
    widget = serializers.CharField(max_length=40, help_text="The widget's public id (its DRAFT config is used).")
    previous_client_secret = serializers.CharField(
        max_length=500, required=False, allow_blank=True,
        help_text="On refresh, the secret that is expiring: the same conversation goes on.",
    )


class PreviewOptionsRequestSerializer(serializers.Serializer):
    widget = serializers.CharField(max_length=40, help_text="The widget's public id.")
    config = serializers.JSONField(
        required=False, default=dict,
        help_text="The unsaved draft config, partial or whole: merged over the saved draft, never saved.",
    )


class PreviewOptionsSerializer(serializers.Serializer):
    options = serializers.JSONField(help_text="ChatKit setOptions values (everything but `api`).")
    autoColorScheme = serializers.BooleanField(help_text="Follow prefers-color-scheme (ChatKit knows light/dark).")


class ChatKitSessionSerializer(serializers.Serializer):
    client_secret = serializers.CharField(help_text="Short-lived ChatKit client secret for the browser.")
    expires_at = serializers.IntegerField(help_text="Unix time (seconds) when the secret expires.")
