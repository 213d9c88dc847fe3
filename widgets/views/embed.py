"""Public routes customer sites call: the loader script, the public config, the n8n chat proxy, leads.

The loader is the same for every origin (cacheable); every JSON endpoint goes through
`public_endpoint` (license check + Origin, fail closed, CORS for allowed origins only).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_http_methods

from config.api import ApiError, error_response
from licenses.models import License
from widgets import loader
from widgets.chat import (
    ChatRequest,
    chat_quota_check,
    chat_rate_check,
    chat_request_parse,
    chat_turn_record,
)
from widgets.config_schema import config_public
from widgets.leads import lead_clean, lead_create
from widgets.models import Widget
from widgets.n8n import N8nError, N8nStream, n8n_history, n8n_send, n8n_target
from widgets.public import public_endpoint
from widgets.selectors import widget_get_published

JS = "application/javascript; charset=utf-8"


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


def _published_widget(license: License, public_id: str) -> Widget:
    widget = widget_get_published(license=license, public_id=public_id or None)
    if widget is None:
        raise ApiError("widget_not_found", "This widget does not exist or is not published.", status_code=404)
    return widget


def _api_error(exc: ApiError) -> JsonResponse:
    if exc.code == "rate_limited":
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
        widget = _published_widget(license, request.GET.get("widget", "")[:40])
    except ApiError as exc:
        return _api_error(exc)
    version = widget.published_version
    response = JsonResponse({
        "widget": widget.public_id,
        "type": version.widget_type,
        "version": version.number,
        "config": config_public(version.config),
    })
    response["Cache-Control"] = "no-cache"
    return response


def _client_ip(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "")


def _ndjson(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


def _relay(stream: N8nStream, chat: ChatRequest, widget: Widget) -> Iterator[bytes]:
    """Relay normalised NDJSON events as they arrive; record the aggregated turn once at the end."""
    for event in stream.events():
        if event["type"] == "end":
            chat_turn_record(widget=widget, session_id=chat.session_id, visitor_id=chat.visitor_id,
                             user_text=chat.chat_input, reply_text=stream.text, ui=stream.ui)
        yield _ndjson(event)


_DONE = object()


async def _async_relay(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Under ASGI a streaming body must be an async iterator; pull the sync relay in the request's thread."""
    step = sync_to_async(lambda: next(chunks, _DONE), thread_sensitive=True)
    try:
        while True:
            chunk = await step()
            if chunk is _DONE:
                break
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=True)()


def _chat(request: HttpRequest, license: License) -> HttpResponse:
    chat = chat_request_parse(
        body=request.body, widget_param=request.GET.get("widget", ""),
        visitor_header=request.headers.get("X-Switchboard-Visitor", ""),
    )
    widget = _published_widget(license, chat.widget_id)
    version = widget.published_version
    if version.widget_type != "n8n":
        raise ApiError("wrong_widget_type", "This widget does not use the n8n chat.", status_code=400)
    target = n8n_target(config=version.config, secrets=widget.secrets)
    if target is None:
        raise ApiError("not_configured", "This widget's chat is not connected yet.", status_code=503)
    retry_after = chat_rate_check(license=license, visitor_id=chat.visitor_id, session_id=chat.session_id,
                                  ip=_client_ip(request))
    if retry_after:
        raise ApiError("rate_limited", "Too many messages; wait a moment and try again.", status_code=429,
                       fields={"retry_after": retry_after})
    if chat.action == "loadPreviousSession":
        messages = n8n_history(target=target, session_id=chat.session_id, metadata=chat.metadata)
        return JsonResponse({"sessionId": chat.session_id, "messages": messages})
    chat_quota_check(widget=widget, session_id=chat.session_id)
    if version.config["connection"]["n8n"].get("streaming"):
        stream = N8nStream(target=target, session_id=chat.session_id, chat_input=chat.chat_input,
                           metadata=chat.metadata)
        chunks = _relay(stream, chat, widget)
        body = _async_relay(chunks) if isinstance(request, ASGIRequest) else chunks
        response = StreamingHttpResponse(body, content_type="application/x-ndjson")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    reply = n8n_send(target=target, session_id=chat.session_id, chat_input=chat.chat_input, metadata=chat.metadata)
    chat_turn_record(widget=widget, session_id=chat.session_id, visitor_id=chat.visitor_id,
                     user_text=chat.chat_input, reply_text=reply.text, ui=reply.ui)
    return JsonResponse({"output": reply.text, "ui": reply.ui})


@public_endpoint(methods=("POST",))
def chat(request: HttpRequest, license: License) -> HttpResponse:
    """POST /api/widget/<key>/chat — the n8n Chat Trigger proxy (see widgets/n8n.py for the protocol)."""
    try:
        return _chat(request, license)
    except ApiError as exc:
        return _api_error(exc)
    except N8nError as exc:
        return error_response(exc.code, exc.message, exc.status)


@public_endpoint(methods=("POST",))
def leads(request: HttpRequest, license: License) -> HttpResponse:
    """POST /api/widget/<key>/leads — a form submitted in the widget (trade-in, contact)."""
    try:
        try:
            data = json.loads(request.body or b"")
        except (ValueError, UnicodeDecodeError):
            raise ApiError("invalid_json", "Send a JSON object.")
        if not isinstance(data, dict):
            raise ApiError("invalid_json", "Send a JSON object.")
        widget_param = request.GET.get("widget", "") or (data.get("widget") if isinstance(data.get("widget"), str)
                                                           else "")
        widget = _published_widget(license, widget_param[:40])
        visitor = request.headers.get("X-Switchboard-Visitor", "")[:128]
        retry_after = chat_rate_check(license=license, visitor_id=visitor, session_id="leads",
                                      ip=_client_ip(request))
        if retry_after:
            raise ApiError("rate_limited", "Too many requests; wait a moment and try again.", status_code=429,
                           fields={"retry_after": retry_after})
        clean = lead_clean(data=data)
        session_id = data.get("sessionId") if isinstance(data.get("sessionId"), str) else ""
        conversation = None
        if session_id:
            conversation = widget.conversations.filter(session_id=session_id[:200]).order_by("id").first()
        lead = lead_create(widget=widget, conversation=conversation, **clean)
    except ApiError as exc:
        return _api_error(exc)
    return JsonResponse({"id": lead.pk, "status": "received"}, status=201)
