"""REST API for widgets (/api/v1/widgets/...). Thin: access via selectors, writes via services."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from licenses.api import ApiError
from licenses.models import License
from licenses.tenancy import current_membership
from widgets.config_schema import CONFIG_SCHEMA, DEFAULT_CONFIG
from widgets.selectors import widget_get_for_user, widget_list_for_user, widget_versions
from widgets.serializers import (
    PublishSerializer,
    RollbackSerializer,
    WidgetCreateSerializer,
    WidgetSerializer,
    WidgetUpdateSerializer,
    WidgetVersionSerializer,
)
from widgets.services import widgets as services


def _valid(serializer_class, request: Request):
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class WidgetListView(APIView):
    @extend_schema(responses=WidgetSerializer(many=True), summary="Widgets of the current agency")
    def get(self, request: Request) -> Response:
        membership = current_membership(request)
        license = None
        if key := request.query_params.get("license"):
            license = License.objects.filter(key=key, agency=membership.agency if membership else None).first()
            if license is None:
                raise Http404
        widgets = widget_list_for_user(
            user=request.user, agency=membership.agency if membership else None, license=license
        )
        return Response(WidgetSerializer(widgets, many=True).data)

    @extend_schema(request=WidgetCreateSerializer, responses={201: WidgetSerializer}, summary="Create a widget")
    def post(self, request: Request) -> Response:
        data = _valid(WidgetCreateSerializer, request)
        membership = current_membership(request)
        license = License.objects.filter(key=data["license"], agency__memberships__user=request.user).first()
        if license is None:
            raise ApiError("not_found", "License not found.", status_code=404, fields={"license": ["Unknown key."]})
        if membership is None or membership.agency_id != license.agency_id:
            from licenses.selectors import membership_get

            membership = membership_get(user=request.user, agency=license.agency_id)
        widget = services.widget_create(
            license=license,
            user=request.user,
            membership=membership,
            name=data["name"],
            config=data.get("config"),
            secrets=data.get("secrets"),
        )
        return Response(WidgetSerializer(widget).data, status=status.HTTP_201_CREATED)


class WidgetDetailView(APIView):
    @extend_schema(responses=WidgetSerializer, summary="A widget with its draft config")
    def get(self, request: Request, public_id: str) -> Response:
        widget, _ = widget_get_for_user(user=request.user, public_id=public_id)
        return Response(WidgetSerializer(widget).data)

    def _update(self, request: Request, public_id: str, *, replace: bool) -> Response:
        widget, membership = widget_get_for_user(user=request.user, public_id=public_id)
        data = _valid(WidgetUpdateSerializer, request)
        widget = services.widget_update(
            widget=widget,
            membership=membership,
            name=data.get("name"),
            config=data.get("config"),
            replace=replace,
            secrets=data.get("secrets"),
            expected_revision=data.get("revision"),
        )
        return Response(WidgetSerializer(widget).data)

    @extend_schema(request=WidgetUpdateSerializer, responses=WidgetSerializer, summary="Save the draft (merge)")
    def patch(self, request: Request, public_id: str) -> Response:
        return self._update(request, public_id, replace=False)

    @extend_schema(request=WidgetUpdateSerializer, responses=WidgetSerializer, summary="Save the draft (replace)")
    def put(self, request: Request, public_id: str) -> Response:
        return self._update(request, public_id, replace=True)

    @extend_schema(responses={204: None}, summary="Delete a widget")
    def delete(self, request: Request, public_id: str) -> Response:
        widget, membership = widget_get_for_user(user=request.user, public_id=public_id)
        services.widget_delete(widget=widget, membership=membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WidgetPublishView(APIView):
    @extend_schema(request=PublishSerializer, responses={201: WidgetVersionSerializer}, summary="Publish the draft")
    def post(self, request: Request, public_id: str) -> Response:
        widget, membership = widget_get_for_user(user=request.user, public_id=public_id)
        data = _valid(PublishSerializer, request)
        version = services.widget_publish(
            widget=widget,
            user=request.user,
            membership=membership,
            note=data.get("note", ""),
            expected_revision=data.get("revision"),
        )
        return Response(WidgetVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class WidgetVersionsView(APIView):
    @extend_schema(responses=WidgetVersionSerializer(many=True), summary="Published versions, newest first")
    def get(self, request: Request, public_id: str) -> Response:
        widget, _ = widget_get_for_user(user=request.user, public_id=public_id)
        return Response(WidgetVersionSerializer(widget_versions(widget=widget), many=True).data)


class WidgetRollbackView(APIView):
    @extend_schema(
        request=RollbackSerializer, responses={201: WidgetVersionSerializer}, summary="Publish an old version again"
    )
    def post(self, request: Request, public_id: str) -> Response:
        widget, membership = widget_get_for_user(user=request.user, public_id=public_id)
        data = _valid(RollbackSerializer, request)
        version = services.widget_rollback(
            widget=widget, user=request.user, membership=membership, number=data["version"]
        )
        return Response(WidgetVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class WidgetDuplicateView(APIView):
    @extend_schema(request=None, responses={201: WidgetSerializer}, summary="Duplicate a widget (same license)")
    def post(self, request: Request, public_id: str) -> Response:
        widget, membership = widget_get_for_user(user=request.user, public_id=public_id)
        copy = services.widget_duplicate(widget=widget, user=request.user, membership=membership)
        return Response(WidgetSerializer(copy).data, status=status.HTTP_201_CREATED)


class ConfigSchemaView(APIView):
    @extend_schema(responses=dict, summary="The widget config JSON Schema and its defaults")
    def get(self, request: Request) -> Response:
        return Response({"schema": CONFIG_SCHEMA, "defaults": DEFAULT_CONFIG})
