"""Public voice endpoints: the session config, the WebRTC ephemeral key and the WebRTC tool bridge.

- `GET /api/realtime/config?license=<key>[&widget=<public_id>]` → for a signed-in member of the
  license's agency (or staff), the exact `session` object the relay sends (built by
  realtime.session_config.session_config; no key in it), so the configurator can show it; for a page
  on the license's allowed origins (CORS + fail-closed Origin check), only the model and audio
  formats (`session_config_public`): instructions, business facts and tools stay server-side.
- `POST /api/realtime/client-secret[?license=<key>]` {license, widget?, visitor_id?} (JSON; send it as
  text/plain to skip the CORS preflight, or name the license in the query so the preflight can answer)
  → {value, expires_at, tools_token, tools_url, model}: the same checks as the relay, then
  `POST {OPENAI_BASE_URL}/realtime/client_secrets` with the same session.
- `POST /api/widget/<key>/tools/<name>` {token, arguments} → {output, ui_event}: runs a server
  tool for a WebRTC call; `token` is a short-lived signature bound to (license, widget, conversation).
- `POST /api/livekit/token[?license=<key>]` {license, widget?, visitor_id?} → {server_url,
  participant_token}: the same checks as the relay (a concurrency slot is taken and held for the agent),
  then a LiveKit participant token for a room of the call's own (realtime/livekit.py).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse

from licenses.api import ApiError, error_response, json_object
from licenses.models import License
from licenses.selectors import license_get_public, membership_get
from realtime import livekit as lk
from realtime import services as svc
from realtime.client import ClientSecretError, client_secret_create
from realtime.session_config import session_config
from widgets.models import Conversation
from widgets.public import check_error, public_check, public_endpoint
from widgets.selectors import openai_api_key
from widgets.tools import TOOLS, tool_run

logger = logging.getLogger(__name__)

TOOLS_TOKEN_SALT = "switchboard.realtime.tools"
TOOLS_TOKEN_MAX_AGE = 15 * 60
CLIENT_SECRET_SECONDS = 60


def _is_member(request: HttpRequest, license: License | None) -> bool:
    user = getattr(request, "user", None)
    if license is None or user is None or not user.is_authenticated:
        return False
    return bool(user.is_staff) or membership_get(user=user, agency=license.agency_id) is not None


def _api_error(exc: ApiError) -> JsonResponse:
    return error_response(exc.code, exc.message, exc.status_code)


@public_endpoint(methods=("GET",), key_from="")
def realtime_config(request: HttpRequest, license: License | None) -> HttpResponse:
    key = request.GET.get("license", "")
    widget_id = request.GET.get("widget", "")
    license = license_get_public(key=key)
    request.public_license = license
    member = _is_member(request, license)
    if not member:
        check = public_check(request, key=key)
        if not check.ok:
            return check_error(check)
    if license is None:
        return error_response("unknown_license", "This license key does not exist.", 404)
    access = svc.voice_access_widget(license=license, widget_public_id=widget_id)
    if access.widget is None:
        return error_response(access.code, access.message, access.http_status)
    # Shown even while voice is switched off: the configurator displays what the relay WOULD send.
    session = session_config(config=access.config, widget=access.widget)
    response = JsonResponse(session if member else session_config_public(session))
    response["Cache-Control"] = "no-store"
    return response


def session_config_public(session: dict[str, Any]) -> dict[str, Any]:
    """What a visitor's browser may learn of the session: the model and the audio formats it must
    speak. Never the instructions, business facts, tools or their guidance: the relay and the
    client-secret endpoint configure the session server-side, and the key in the embed tag plus an
    Origin header (free outside browsers) is all a caller needs to ask."""
    audio = session.get("audio", {})
    return {
        "type": session["type"],
        "model": session["model"],
        "output_modalities": list(session.get("output_modalities", [])),
        "audio": {
            "input": {"format": audio.get("input", {}).get("format")},
            "output": {"format": audio.get("output", {}).get("format")},
        },
    }


def tools_token_make(*, license: License, widget_id: int, conversation_id: int) -> str:
    return signing.dumps({"l": license.pk, "w": widget_id, "c": conversation_id}, salt=TOOLS_TOKEN_SALT, compress=True)


def tools_token_read(token: str) -> dict[str, int] | None:
    try:
        data = signing.loads(token, salt=TOOLS_TOKEN_SALT, max_age=TOOLS_TOKEN_MAX_AGE)
    except signing.BadSignature:
        return None
    return data if isinstance(data, dict) else None


@public_endpoint(methods=("POST",), key_from="")
def client_secret(request: HttpRequest, license: License | None) -> HttpResponse:
    try:
        body = json_object(request, empty={})
    except ApiError as exc:
        return _api_error(exc)
    key = str(body.get("license") or request.GET.get("license") or "")
    request.public_license = license_get_public(key=key)
    check = public_check(request, key=key, quota="voice_minutes")
    if not check.ok:
        return check_error(check)
    access = svc.voice_access_widget(license=check.license, widget_public_id=str(body.get("widget") or ""))
    if not access.ok:
        return error_response(access.code, access.message, access.http_status)
    license = check.license
    try:
        in_use = svc.voice_slots_in_use(license=license)
    except Exception:  # Redis unreachable: a clean "try again", as the relay answers (issue 11, finding 3)
        logger.warning("realtime: slot count failed", exc_info=True)
        refusal = svc.voice_refusal("server_busy")
        return error_response(refusal.code, refusal.message, 503)
    if in_use >= license.max_concurrent_voice_sessions:
        refusal = svc.voice_refusal("too_many_sessions")
        return error_response(refusal.code, refusal.message, 429)
    session = session_config(config=access.config, widget=access.widget)
    try:
        secret = client_secret_create(
            api_key=openai_api_key(secrets=access.widget.secrets),
            session=session,
            seconds=CLIENT_SECRET_SECONDS,
        )
    except ClientSecretError as exc:
        return error_response(exc.code, exc.message, exc.status_code)
    conversation = svc.voice_conversation_start(
        widget=access.widget, visitor_id=str(body.get("visitor_id") or "")[:128]
    )
    Conversation.objects.filter(pk=conversation.pk).update(session_id="webrtc-" + conversation.session_id[:40])
    return JsonResponse(
        {
            "value": secret["value"],
            "expires_at": secret["expires_at"],
            "model": session["model"],
            "tools_token": tools_token_make(
                license=license, widget_id=access.widget.pk, conversation_id=conversation.pk
            ),
            "tools_url": f"/api/widget/{license.key}/tools/",
        }
    )


@public_endpoint(methods=("POST",))
def tool_call(request: HttpRequest, license: License, name: str) -> HttpResponse:
    try:
        body = json_object(request, empty={})
    except ApiError as exc:
        return _api_error(exc)
    claims = tools_token_read(str(body.get("token") or ""))
    if claims is None or claims.get("l") != license.pk:
        return error_response("invalid_token", "The tool token is missing, expired or not for this call.", 403)
    conversation = (
        Conversation.objects.select_related("widget", "widget__published_version")
        .filter(pk=claims.get("c"), widget_id=claims.get("w"), widget__license=license, ended_at__isnull=True)
        .first()
    )
    if conversation is None or conversation.widget.published_version is None:
        return error_response("invalid_token", "The tool token is missing, expired or not for this call.", 403)
    if name not in TOOLS:
        return error_response("unknown_tool", "No such tool.", 404)
    result = tool_run(
        name=name,
        widget=conversation.widget,
        conversation=conversation,
        arguments=body.get("arguments"),
        config=conversation.widget.published_version.config,
    )
    return JsonResponse({"output": result.output(), "say": result.speak, "ui_event": result.ui_event})


@public_endpoint(methods=("POST",), key_from="")
def livekit_token(request: HttpRequest, license: License | None) -> HttpResponse:
    """LiveKit's token-endpoint convention: `{server_url, participant_token}`. Refusals answer as the
    client-secret endpoint does; a site whose license check fails learns nothing of LiveKit."""
    try:
        body = json_object(request, empty={})
    except ApiError as exc:
        return _api_error(exc)
    key = str(body.get("license") or request.GET.get("license") or "")
    request.public_license = license_get_public(key=key)
    check = public_check(request, key=key, quota="voice_minutes")
    if not check.ok:
        return check_error(check)
    access = svc.voice_access_widget(license=check.license, widget_public_id=str(body.get("widget") or ""))
    if not access.ok:
        return error_response(access.code, access.message, access.http_status)
    if access.config["voice"].get("transport") != "livekit":
        return error_response("wrong_transport", "This widget's voice does not use LiveKit.", 409)
    if not lk.livekit_configured():
        return error_response("livekit_not_configured", "LiveKit is not configured on this server.", 503)
    license = check.license
    slot_token = uuid.uuid4().hex
    try:
        slot = svc.voice_slot_acquire(license=license, token=slot_token, ttl=lk.SLOT_HOLD_SECONDS)
    except Exception:  # Redis unreachable: a clean "try again", as the relay answers
        logger.warning("livekit: slot acquire failed", exc_info=True)
        refusal = svc.voice_refusal("server_busy")
        return error_response(refusal.code, refusal.message, 503)
    if slot is None:
        refusal = svc.voice_refusal("too_many_sessions")
        return error_response(refusal.code, refusal.message, 429)
    try:
        # relayed=True: the call gets a heartbeat, so a token never used is reaped as `worker_lost`.
        conversation = svc.voice_conversation_start(
            widget=access.widget, visitor_id=str(body.get("visitor_id") or "")[:128], relayed=True
        )
        session_id = "livekit-" + conversation.session_id[:40]
        Conversation.objects.filter(pk=conversation.pk).update(session_id=session_id)
    except Exception:
        svc.voice_slot_release(key=slot, token=slot_token)
        raise
    metadata = lk.DispatchMetadata(
        license=license.pk,
        widget=access.widget.pk,
        version=access.widget.published_version_id,
        conversation=conversation.pk,
        room=lk.room_name(session_id=conversation.session_id),
        visitor=lk.visitor_identity(visitor_id=conversation.visitor_id, session_id=conversation.session_id),
        slot=slot,
        slot_token=slot_token,
    )
    response = JsonResponse(
        {"server_url": settings.LIVEKIT_URL, "participant_token": lk.participant_token_create(metadata=metadata)}
    )
    response["Cache-Control"] = "no-store"
    return response
