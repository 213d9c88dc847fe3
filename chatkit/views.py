"""ChatKit views: the iframe page, session minting (public and preview) and the reserved server URL.

Thin: access through selectors (`license_get_public`, `widget_get_for_user`, `chatkit_widget_*`),
rules in chatkit/services.py, the upstream call in chatkit/client.py.

How the public session endpoint authorises the ChatKit iframe (DESIGN: public calls fail closed):
the iframe page lives on OUR origin, so its session calls carry our own Origin. The page is only
rendered for an embedding origin (`?origin=`, else the Referer's origin) that passes the license
check, and it carries a signed page token bound to license + widget + that origin. A session call
whose Origin is our own host must present that token, and the token's origin is checked against
the license again (so removing a domain takes effect at once). Calls from customer origins are
checked directly against the allowed domains. A missing or `null` Origin is always refused.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatkit.client import ChatKitError, ChatKitSession
from chatkit.selectors import chatkit_widget_draft, chatkit_widget_published
from chatkit.serializers import (
    ChatKitSessionSerializer,
    PreviewOptionsRequestSerializer,
    PreviewOptionsSerializer,
    PreviewSessionRequestSerializer,
)
from chatkit.services import (
    AGENT_BUILDER_SHUTDOWN,
    chatkit_color_scheme_auto,
    chatkit_mode,
    chatkit_options,
    chatkit_session_start,
    chatkit_setup_problem,
    frame_ancestors,
    page_token_issue,
    same_origin,
    session_caller_resolve,
    visitor_id_clean,
)
from config.api import ApiError, error_response, json_object
from licenses.models import License
from licenses.selectors import REASON_MESSAGES, license_check, license_get_public, license_status_reason
from widgets.config_schema import ConfigError, config_normalize
from widgets.models import Widget
from widgets.public import public_endpoint, request_origin
from widgets.selectors import widget_get_for_user


def _error(exc: ChatKitError) -> JsonResponse:
    return error_response(exc.code, exc.message, exc.status_code)


def _session_body(session: ChatKitSession) -> dict[str, Any]:
    # Only what ChatKit needs: never the key, the workflow id or the upstream session object.
    return {"client_secret": session.client_secret, "expires_at": session.expires_at}


def _previous_secret(body: Any) -> str:
    value = body.get("previous_client_secret") if isinstance(body, dict) else None
    return value[:500] if isinstance(value, str) else ""


def _own_origin(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


def _referer_origin(request: HttpRequest) -> str | None:
    parts = urlsplit(request.headers.get("Referer", ""))
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


# --- POST /api/chatkit/sessions -----------------------------------------------------------------


@public_endpoint(methods=("POST",), key_from="", preflight_any_origin=True)
def session_create(request: HttpRequest, license: None) -> HttpResponse:
    """`{license, widget?, visitor_id, page_token?, previous_client_secret?}` → `{client_secret, expires_at}`.

    The license key is in the body, so a CORS preflight cannot know the license: it is answered for
    any well-formed Origin, and the POST itself decides (its answer carries
    Access-Control-Allow-Origin only for the license's allowed domains).
    """
    try:
        body = json_object(request, empty={})
    except ApiError as exc:
        return error_response(exc.code, exc.message, exc.status_code)
    key = body.get("license") if isinstance(body.get("license"), str) else ""
    widget_id = body.get("widget") if isinstance(body.get("widget"), str) else ""
    previous = _previous_secret(body)
    found = request.public_license = license_get_public(key=key)
    try:
        caller = session_caller_resolve(
            origin=request_origin(request), own_origin=_own_origin(request), token=body.get("page_token"),
            license_key=key, widget_id=widget_id,
        )
        # A refresh may continue a conversation uncounted, so only a new one needs quota up front
        # (the exact check happens when a session is counted).
        check = license_check(license=found, origin=caller.origin, quota=None if previous else "conversations")
        if not check.ok:
            raise ChatKitError(check.reason, check.message, check.http_status)
        assert found is not None
        visitor_id = visitor_id_clean(body.get("visitor_id"))
        widget, config = chatkit_widget_published(license=found, public_id=widget_id or caller.widget_id)
        session = chatkit_session_start(license=found, widget=widget, config=config, visitor_id=visitor_id,
                                        previous_secret=previous)
        response: HttpResponse = JsonResponse(_session_body(session))
        response["Cache-Control"] = "no-store"
    except ChatKitError as exc:
        response = _error(exc)
    return response




# --- POST /api/chatkit/preview-sessions (configurator) --------------------------------------------


class PreviewSessionView(APIView):
    """A session for the configurator preview: signed-in member of the widget's agency (any role),
    the DRAFT config, CSRF-protected session auth, no Origin check, never counted as usage."""

    @extend_schema(request=PreviewSessionRequestSerializer, responses=ChatKitSessionSerializer,
                   summary="ChatKit session for the configurator preview (draft config, not counted)")
    def post(self, request: Request) -> Response:
        data = PreviewSessionRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        public_id = data.validated_data["widget"]
        widget, _membership = widget_get_for_user(user=request.user, public_id=public_id)
        reason = license_status_reason(license=widget.license)
        if reason != "ok":
            raise ApiError(reason, REASON_MESSAGES[reason], status_code=403)
        try:
            config = chatkit_widget_draft(widget=widget)
            session = chatkit_session_start(
                license=widget.license, widget=widget, config=config, visitor_id=f"preview:{request.user.pk}",
                preview=True, previous_secret=data.validated_data.get("previous_client_secret", ""),
            )
        except ChatKitError as exc:
            raise ApiError(exc.code, exc.message, status_code=exc.status_code)
        return Response(_session_body(session), headers={"Cache-Control": "no-store"})


# --- POST /api/chatkit/preview-options (configurator: live theme edits) ------------------------------


class PreviewOptionsView(APIView):
    """The ChatKit options for an UNSAVED draft, so the preview page follows edits live.

    The draft (partial or whole) is merged over the saved draft and validated like a save would,
    then mapped by `chatkit_options` (the one mapping). Nothing is saved; no secret is in the answer.
    Signed-in member of the widget's agency (any role), CSRF-protected session auth.
    """

    @extend_schema(request=PreviewOptionsRequestSerializer, responses=PreviewOptionsSerializer,
                   summary="ChatKit options for an unsaved draft config (configurator preview)")
    def post(self, request: Request) -> Response:
        data = PreviewOptionsRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        widget, _membership = widget_get_for_user(user=request.user, public_id=data.validated_data["widget"])
        try:
            saved = chatkit_widget_draft(widget=widget)
        except ChatKitError as exc:
            raise ApiError(exc.code, exc.message, status_code=exc.status_code)
        try:
            config = config_normalize(data.validated_data["config"], base=saved)
        except ConfigError as exc:
            fields = {f"config.{path}" if path != "config" else "config": msgs for path, msgs in exc.errors.items()}
            raise ApiError("invalid_config", str(exc), fields=fields)
        body = {"options": chatkit_options(config), "autoColorScheme": chatkit_color_scheme_auto(config)}
        return Response(body, headers={"Cache-Control": "no-store"})


# --- GET /widget/chatkit/<license_key> and /widget/chatkit/preview/<public_id> ---------------------


def _problem(request: HttpRequest, *, status: int, title: str, message: str) -> HttpResponse:
    response = render(request, "chatkit/problem.html", {"title": title, "message": message}, status=status)
    # A static message with nothing to click: any page may frame it, so the visitor sees why.
    response["Content-Security-Policy"] = "frame-ancestors *"
    response["Cache-Control"] = "no-store"
    return response


def _page(
    request: HttpRequest, *, license: License, widget: Widget, config: dict[str, Any], origin: str | None,
    preview: bool,
) -> HttpResponse:
    mode = chatkit_mode(config)
    page: dict[str, Any] = {
        "mode": mode,
        "preview": preview,
        "license": license.key,
        "widget": widget.public_id,
        "visitor": request.GET.get("visitor", "")[:128],
        "autoColorScheme": chatkit_color_scheme_auto(config),
    }
    if preview:
        page["sessionUrl"] = reverse("chatkit:preview-sessions")
        page["optionsUrl"] = reverse("chatkit:preview-options")
        page["csrfToken"] = get_token(request)
    else:
        assert origin is not None
        page["sessionUrl"] = reverse("chatkit:sessions")
        page["token"] = page_token_issue(license=license, widget=widget, origin=origin)
    if mode == "server":
        page["apiUrl"] = reverse("chatkit:server", kwargs={"license_key": license.key})
        page["domainKey"] = settings.CHATKIT_DOMAIN_KEY
    context = {
        "options": chatkit_options(config),
        "page": page,
        "problem": chatkit_setup_problem(widget=widget, config=config),
        "legacy_note": preview and mode == "hosted",
        "shutdown": AGENT_BUILDER_SHUTDOWN,
        "chatkit_js_url": settings.CHATKIT_JS_URL,
        "lang": config["behaviour"]["locale"] or "en",
    }
    response = render(request, "chatkit/page.html", context)
    ancestors = "'self'" if preview else frame_ancestors(license.allowed_domains)
    response["Content-Security-Policy"] = f"frame-ancestors {ancestors}"
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


@xframe_options_exempt
@require_GET
def page(request: HttpRequest, license_key: str) -> HttpResponse:
    """The ChatKit iframe for a customer page. `?widget=<public_id>` picks the widget and
    `?origin=<embedding page origin>` names the customer page (the Referer's origin otherwise)."""
    license = license_get_public(key=license_key)
    reason = license_status_reason(license=license)
    if reason != "ok":
        return _problem(request, status=404 if reason == "unknown_license" else 403, title="Chat unavailable",
                        message=REASON_MESSAGES[reason])
    assert license is not None
    referer = _referer_origin(request)
    if not referer:
        # A browser always sends the framing page's origin here (the loader's iframe asks for it with
        # referrerpolicy="origin"); without one, `?origin=` would be an unproven claim that lets any
        # page open this one top-level and spend the license's sessions.
        return _problem(request, status=403, title="Chat unavailable",
                        message="Open this chat from the website that embeds it.")
    origin = request.GET.get("origin") or referer
    check = license_check(license=license, origin=origin)
    if not check.ok:
        return _problem(request, status=check.http_status, title="Chat unavailable", message=check.message)
    if referer and not same_origin(referer, _own_origin(request)) and not same_origin(referer, origin):
        return _problem(request, status=403, title="Chat unavailable",
                        message="The page embedding this chat is not the one it claims to be.")
    try:
        widget, config = chatkit_widget_published(license=license, public_id=request.GET.get("widget", ""))
    except ChatKitError as exc:
        return _problem(request, status=exc.status_code, title="Chat unavailable", message=exc.message)
    return _page(request, license=license, widget=widget, config=config, origin=origin, preview=False)


@xframe_options_exempt
@require_GET
def preview_page(request: HttpRequest, public_id: str) -> HttpResponse:
    """The configurator's ChatKit preview: the DRAFT config, for signed-in members of the agency."""
    if not request.user.is_authenticated:
        return _problem(request, status=403, title="Sign in to preview", message="Sign in to preview this widget.")
    widget, _membership = widget_get_for_user(user=request.user, public_id=public_id)
    try:
        config = chatkit_widget_draft(widget=widget)
    except ChatKitError as exc:
        return _problem(request, status=exc.status_code, title="No preview", message=exc.message)
    return _page(request, license=widget.license, widget=widget, config=config, origin=None, preview=True)


# --- POST /api/chatkit/<license_key>/ (our own ChatKit server: a later issue) -----------------------


@csrf_exempt
def server(request: HttpRequest, license_key: str) -> HttpResponse:
    return error_response(
        "not_implemented", "The Switchboard ChatKit server is not available yet; use hosted mode for now.", 501
    )
