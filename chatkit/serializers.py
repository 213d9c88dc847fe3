"""Request/response shapes of the ChatKit session endpoints (validation + OpenAPI)."""

from rest_framework import serializers


class PreviewSessionRequestSerializer(serializers.Serializer):
    widget = serializers.CharField(max_length=40, help_text="The widget's public id (its DRAFT config is used).")
    previous_client_secret = serializers.CharField(
        max_length=500, required=False, allow_blank=True,
        help_text="On refresh, the secret that is expiring: the same conversation goes on.",
    )


class ChatKitSessionSerializer(serializers.Serializer):
    client_secret = serializers.CharField(help_text="Short-lived ChatKit client secret for the browser.")
    expires_at = serializers.IntegerField(help_text="Unix time (seconds) when the secret expires.")
