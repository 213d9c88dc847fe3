"""Public routes customer sites call: the loader script, the public config, the n8n chat proxy, leads.

The loader is the same for every origin (cacheable); every JSON endpoint goes through
`public_endpoint` (license check + Origin, fail closed, CORS for allowed origins only).
"""

from __future__ import annotations

import re
from dataclasses import replace

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_http_methods

from licenses.api import ApiError, error_response, json_body_bytes, json_compact, json_object
from licenses.hosts import request_host_agency
from licenses.identity import (
    identity_require_check,
    identity_token_issue,
    identity_token_read,
    identity_verify,
)
from licenses.installs import install_seen
from licenses.models import License
from licenses.selectors import license_get_public, license_status_reason
from widgets import loader
from widgets.chat import (
    ChatRequest,
    chat_history,
    chat_is_streaming,
    chat_license_cached,
    chat_prepare_async,
    chat_reply,
    chat_request_parse,
    chat_with_identity,
    published_widget_or_404,
    rate_limit_or_429,
)
from widgets.chat_stream import chat_stream
from widgets.config_schema import config_public
from widgets.models import Widget
from widgets.n8n import N8nTarget
from widgets.page_context import page_context_upstream
from widgets.public import public_endpoint, request_origin
from widgets.services.leads import lead_submit

JS = "application/javascript; charset=utf-8"
LOCALE_RE = re.compile(r"[a-z]{2}(-[A-Z]{2})?")


def _etag_matches(request: HttpRequest, etag: str) -> bool:
    header = request.headers.get("If-None-Match", "")
    if not header or not etag:
        return False
    if header.strip() == "*":
        return True
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return etag in candidates


@require_http_methods(["GET", "HEAD"])
def chat_widget_js(request: HttpRequest, license_key: str) -> HttpResponse:
    """GET /api/widget/<key>/chat-widget.js[?widget=<public_id>] — the one script tag customers paste."""
    widget_id = request.GET.get("widget", "")[:40]
    result = loader.loader_get(key=license_key, widget_id=widget_id)
    if result.status == 200 and request_host_agency.get() is not None:
        # On an agency's own domain the cached resolution is re-checked against that agency (one query).
        license = license_get_public(key=license_key)
        if license is None or license_status_reason(license=license) == "unknown_license":
            result = loader.loader_error("unknown_license", 404)
    if result.reason != "unknown_license":
        # A script tag sends no Origin; the Referer (origin-only under the default referrer policy) names the
        # page. Counted in memory only (licenses/installs.py): the loader stays free of database writes.
        page = request.headers.get("Origin") or request.headers.get("Referer")
        install_seen(license_key=license_key, origin=page, outcome=result.reason)
    if result.status == 200 and _etag_matches(request, result.etag):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(result.body, status=result.status, content_type=JS)
    if result.etag:
        response["ETag"] = result.etag
        response["Cache-Control"] = loader.CACHE_CONTROL
    else:
        response["Cache-Control"] = loader.ERROR_CACHE_CONTROL
    # Any page may load the script (authorization happens on the API calls it makes).
    response["Access-Control-Allow-Origin"] = "*"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


def _api_error(exc: ApiError) -> JsonResponse:
    if "retry_after" in exc.fields:
        retry_after = int(exc.fields.get("retry_after", 60))
        response = JsonResponse(
            {"error": {"code": exc.code, "message": exc.message, "retry_after": retry_after}}, status=429
        )
        response["Retry-After"] = str(retry_after)
        return response
    return error_response(exc.code, exc.message, exc.status_code, exc.fields or None)


@public_endpoint(methods=("GET",))
def widget_config(request: HttpRequest, license: License) -> HttpResponse:
    """GET /api/widget/<key>/config[?widget=] — the published public config (never the draft or secrets)."""
    try:
        widget = published_widget_or_404(license=license, public_id=request.GET.get("widget", ""))
    except ApiError as exc:
        return _api_error(exc)
    version = widget.published_version
    public = config_public(version.config)
    # Switchboard.setLocale(code): the same config with another locale's texts (the overrides stay).
    locale = request.GET.get("locale", "")
    if locale:
        if not LOCALE_RE.fullmatch(locale):
            return _api_error(ApiError("invalid_locale", 'locale must look like "de" or "fr-CA".'))
        public = config_public({**version.config, "behaviour": {**version.config["behaviour"], "locale": locale}})
    response = JsonResponse(
        {
            "widget": widget.public_id,
            "type": version.widget_type,
            "version": version.number,
            "config": public,
        }
    )
    response["Cache-Control"] = "no-cache"
    return response


def _client_ip(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "")


async def chat_answer(
    request: HttpRequest,
    *,
    widget: Widget,
    target: N8nTarget,
    chat: ChatRequest,
    streaming: bool,
    record: bool = True,
    conversation_id: int | None = None,
) -> HttpResponse:
    """The answer to one chat request, public or preview: history, a JSON reply, or the NDJSON stream.
    Raises ApiError / N8nError (see `chat_error`)."""
    if chat.action == "loadPreviousSession":
        return JsonResponse({"sessionId": chat.session_id, "messages": await chat_history(target=target, chat=chat)})
    if streaming:
        body = await chat_stream(
            widget=widget,
            target=target,
            chat=chat,
            asgi=isinstance(request, ASGIRequest),
            record=record,
            conversation_id=conversation_id,
        )
        response = StreamingHttpResponse(body, content_type="application/x-ndjson")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    reply = await chat_reply(widget=widget, target=target, chat=chat, record=record, conversation_id=conversation_id)
    # json_compact: every plain turn's answer is encoded here (issue 11 bench).
    return HttpResponse(json_compact({"output": reply.text, "ui": reply.ui}), content_type="application/json")


def chat_error(exc: ApiError) -> JsonResponse:
    return _api_error(exc)


async def _chat(request: HttpRequest, license: License) -> HttpResponse:
    chat = chat_request_parse(
        body=json_body_bytes(request),
        widget_param=request.GET.get("widget", ""),
        visitor_header=request.META.get("HTTP_X_SWITCHBOARD_VISITOR", ""),
    )
    # Switchboard('identify') (issue 15.2): the signed identity token, checked without a database read.
    identity = identity_token_read(license=license, token=request.META.get("HTTP_X_SWITCHBOARD_IDENTITY", ""))
    chat = chat_with_identity(chat, identity)
    prepared = await chat_prepare_async(
        license=license, chat=chat, ip=_client_ip(request), origin=request_origin(request)
    )
    identity_require_check(license=prepared.license, identity=identity)  # the license as chat_prepare proved it
    # Page context goes on only when the widget sends it (behaviour.page_context, off by default).
    metadata = page_context_upstream(chat.metadata, config=prepared.widget.published_version.config)
    if chat.identity:  # ours (licenses/identity.py), whatever the page-context setting
        metadata["identity"] = chat.identity
    chat = replace(chat, metadata=metadata)
    return await chat_answer(
        request,
        widget=prepared.widget,
        target=prepared.target,
        chat=chat,
        streaming=chat_is_streaming(widget=prepared.widget),
        conversation_id=prepared.conversation_id,
    )


@public_endpoint(methods=("POST",), license_cached=chat_license_cached)
async def chat(request: HttpRequest, license: License) -> HttpResponse:
    """POST /api/widget/<key>/chat — the n8n Chat Trigger proxy (see widgets/n8n.py for the protocol).

    Async end to end: the checks and the record are short DB steps, the wait on n8n holds no DB
    connection and no thread (DESIGN rule 7)."""
    try:
        return await _chat(request, license)
    except ApiError as exc:
        return chat_error(exc)


@public_endpoint(methods=("POST",))
def identify(request: HttpRequest, license: License) -> HttpResponse:
    """POST /api/widget/<key>/identify — {user_id, email?, name?, attributes?, user_hash?} → {token, verified}.

    The hash is checked against the license's identity secret (licenses/identity.py); a wrong one is
    refused (403 identity_invalid) and logged. The token goes with each chat turn (X-Switchboard-Identity)."""
    try:
        data = json_object(request)
        rate_limit_or_429(
            license=license,
            visitor_id=request.headers.get("X-Switchboard-Visitor", "")[:128],
            session_id="identify",
            ip=_client_ip(request),
        )
        identity = identity_verify(
            license=license,
            data={k: data.get(k) for k in ("user_id", "email", "name", "attributes")},
            user_hash_value=data.get("user_hash"),
            origin=request_origin(request) or "",
        )
    except ApiError as exc:
        return _api_error(exc)
    token = identity_token_issue(license=license, identity=identity)
    response = JsonResponse({"token": token, "verified": identity.verified, "user_id": identity.user_id})
    response["Cache-Control"] = "no-store"
    return response


@public_endpoint(methods=("POST",))
def leads(request: HttpRequest, license: License) -> HttpResponse:
    """POST /api/widget/<key>/leads — a form submitted in the widget (trade-in, contact)."""
    try:
        data = json_object(request)
        widget_param = request.GET.get("widget", "") or str(data.get("widget") or "")
        widget = published_widget_or_404(license=license, public_id=widget_param)
        rate_limit_or_429(
            license=license,
            visitor_id=request.headers.get("X-Switchboard-Visitor", "")[:128],
            session_id="leads",
            ip=_client_ip(request),
        )
        lead = lead_submit(widget=widget, data=data)
    except ApiError as exc:
        return _api_error(exc)
    return JsonResponse({"id": lead.pk, "status": "received"}, status=201)
