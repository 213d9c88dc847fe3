"""REST API for the current user, agencies and licenses (/api/v1/)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from licenses import services
from licenses.api import INT32_MAX, ApiError
from licenses.selectors import (
    license_get_for_user,
    license_list_for_user,
    membership_get,
    membership_list_for_user,
)
from licenses.serializers import LicenseSerializer, LicenseWriteSerializer, MembershipSerializer, UserSerializer
from licenses.tenancy import current_agency_set, current_membership


class MeSerializer(serializers.Serializer):
    user = UserSerializer()
    memberships = MembershipSerializer(many=True)
    current = MembershipSerializer(allow_null=True)


class MeView(APIView):
    @extend_schema(responses=MeSerializer, summary="The signed-in user, their agencies and the current one")
    def get(self, request: Request) -> Response:
        current = current_membership(request)
        return Response(
            {
                "user": UserSerializer(request.user).data,
                "memberships": MembershipSerializer(membership_list_for_user(user=request.user), many=True).data,
                "current": MembershipSerializer(current).data if current else None,
            }
        )


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1, "maxLength": 80},
            {"type": "integer", "minimum": 1, "maximum": INT32_MAX},
        ]
    }
)
class SlugOrIdField(serializers.Field):
    """An agency's slug (text) or id (a whole number), exactly as the schema states both."""

    default_error_messages = {"invalid": "Give the agency's slug (text) or id (a whole number)."}

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("invalid")
        if isinstance(data, int) and not 1 <= data <= INT32_MAX or isinstance(data, str) and not 1 <= len(data) <= 80:
            self.fail("invalid")
        return str(data)

    def to_representation(self, value: Any) -> Any:
        return value


class SwitchAgencySerializer(serializers.Serializer):
    agency = SlugOrIdField(help_text="Agency slug or id.")


class SwitchAgencyView(APIView):
    @extend_schema(request=SwitchAgencySerializer, responses=MembershipSerializer, summary="Switch the current agency")
    def post(self, request: Request) -> Response:
        serializer = SwitchAgencySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        wanted = serializer.validated_data["agency"]
        membership = next(
            (m for m in membership_list_for_user(user=request.user) if wanted in (m.agency.slug, str(m.agency_id))),
            None,
        )
        if membership is None:
            raise Http404
        current_agency_set(request, membership)
        return Response(MembershipSerializer(membership).data)


class LicenseListView(APIView):
    @extend_schema(responses=LicenseSerializer(many=True), summary="Licenses of the current agency")
    def get(self, request: Request) -> Response:
        membership = current_membership(request)
        licenses = license_list_for_user(user=request.user, agency=membership.agency if membership else None)
        return Response(LicenseSerializer(licenses, many=True).data)

    @extend_schema(request=LicenseWriteSerializer, responses={201: LicenseSerializer}, summary="Create (staff)")
    def post(self, request: Request) -> Response:
        if not request.user.is_staff:
            raise ApiError("permission_denied", "Only staff can create licenses.", status_code=403)
        serializer = LicenseWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if "agency" not in data:
            raise ApiError("invalid", "agency: choose the agency.", fields={"agency": ["This field is required."]})
        license = services.license_create(**data)
        return Response(LicenseSerializer(license).data, status=status.HTTP_201_CREATED)


class LicenseDetailView(APIView):
    @extend_schema(responses=LicenseSerializer, summary="A license (members of its agency, or staff)")
    def get(self, request: Request, key: str) -> Response:
        return Response(LicenseSerializer(license_get_for_user(user=request.user, key=key)).data)

    @extend_schema(
        request=LicenseWriteSerializer,
        responses=LicenseSerializer,
        summary="Change (staff); agency admins and owners may change allowed_domains alone",
    )
    def patch(self, request: Request, key: str) -> Response:
        license = license_get_for_user(user=request.user, key=key)
        if not request.user.is_staff:
            domains_only = isinstance(request.data, dict) and set(request.data) == {"allowed_domains"}
            if not domains_only:
                raise ApiError(
                    "permission_denied",
                    "Only staff can change licenses; agency admins and owners may change allowed_domains.",
                    status_code=403,
                )
            serializer = LicenseWriteSerializer(data=request.data, partial=True)
            serializer.is_valid(raise_exception=True)
            actor = membership_get(user=request.user, agency=license.agency_id)
            license = services.license_domains_set(
                actor=actor, license=license, domains=serializer.validated_data["allowed_domains"]
            )
            return Response(LicenseSerializer(license).data)
        serializer = LicenseWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data.pop("agency", None)
        return Response(LicenseSerializer(services.license_update(license=license, **data)).data)


class LicenseActionView(APIView):
    """POST /api/v1/licenses/<key>/<action>/ — suspend, reactivate, revoke, extend, rotate-key (staff)."""

    permission_classes = [IsAdminUser]
    ACTIONS = {
        "suspend": services.license_suspend,
        "reactivate": services.license_reactivate,
        "revoke": services.license_revoke,
        "extend": services.license_extend,
        "rotate-key": services.license_rotate_key,
    }

    @extend_schema(
        request=None,
        responses=LicenseSerializer,
        summary="Staff action on a license",
        operation_id="v1_licenses_action",
    )
    def post(self, request: Request, key: str, action: str) -> Response:
        license = license_get_for_user(user=request.user, key=key)
        handler = self.ACTIONS.get(action)
        if handler is None:
            raise Http404
        return Response(LicenseSerializer(handler(license=license)).data)


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Database and (when configured) Redis reachable."""
    from django.conf import settings

    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report any failure as unhealthy
        checks["database"] = f"error: {exc.__class__.__name__}"
    if settings.REDIS_URL:
        try:
            from licenses.redis import redis_client

            redis_client().ping()  # the shared pool: no new connection per probe
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {exc.__class__.__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503)
