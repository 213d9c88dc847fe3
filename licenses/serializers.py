from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers

from licenses.api import INT32_MAX, StrictCharField
from licenses.models import Agency, License, Membership
from licenses.selectors import license_quota_left, license_status_reason, usage_for_month


class AgencySerializer(serializers.ModelSerializer):
    class Meta:
        model = Agency
        fields = ["id", "name", "slug"]


class MembershipSerializer(serializers.ModelSerializer):
    agency = AgencySerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["agency", "role"]


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "first_name", "last_name", "is_staff"]


class LicenseSerializer(serializers.ModelSerializer):
    agency = AgencySerializer(read_only=True)
    serving = serializers.SerializerMethodField(help_text="Reason code of the license check, ignoring Origin.")
    usage = serializers.SerializerMethodField()

    class Meta:
        model = License
        fields = [
            "key",
            "agency",
            "client_name",
            "status",
            "serving",
            "starts_at",
            "expires_at",
            "grace_days",
            "allowed_domains",
            "limits",
            "notes",
            "usage",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_serving(self, obj: License) -> str:
        return license_status_reason(license=obj)

    def get_usage(self, obj: License) -> dict:
        usage = usage_for_month(license=obj)
        return {
            "conversations": (usage.conversations + usage.chatkit_sessions) if usage else 0,
            "voice_minutes": usage.voice_minutes if usage else 0.0,
            "conversations_left": max(0, license_quota_left(license=obj, kind="conversations")),
            "voice_minutes_left": max(0.0, round(license_quota_left(license=obj, kind="voice_minutes"), 2)),
        }


class LicenseWriteSerializer(serializers.Serializer):
    agency = serializers.SlugRelatedField(slug_field="slug", queryset=Agency.objects.all(), required=False)
    client_name = StrictCharField(max_length=200, required=False)
    allowed_domains = serializers.ListField(child=StrictCharField(max_length=300), required=False)
    limits = serializers.DictField(child=serializers.IntegerField(min_value=0, max_value=INT32_MAX), required=False)
    starts_at = serializers.DateTimeField(required=False, allow_null=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    grace_days = serializers.IntegerField(min_value=0, max_value=365, required=False)
    notes = StrictCharField(required=False, allow_blank=True)
