"""Public voice endpoints: the session config, the WebRTC ephemeral key and the WebRTC tool bridge.

- `GET /api/realtime/config?license=<key>[&widget=<public_id>]` → for a signed-in member of the
  license's agency (or staff), the exact `session` object the relay sends (built by
  realtime.session_config.session_config; no key in it), so the configurator can show it; for a page
  on the license's allowed origins (CORS + fail-closed Origin check), only the model and audio
  formats (`session_config_public`): instructions, business facts and tools stay server-side.
- `POST /api/realtime/client-secret[?license=<key>]` {license, widget?, visitor_id?, identity?, page_context?}
  (JSON; send it as text/plain to skip the CORS preflight, or name the license in the query so the
  preflight can answer)
  → {value, expires_at, tools_token, tools_url, model}: the same checks as the relay, then
  `POST {OPENAI_BASE_URL}/realtime/client_secrets` with the same session.
  The answer also names `calls_url` ({OPENAI_BASE_URL}/realtime/calls: where the browser posts its SDP offer)
  and `record_url`.
- `POST /api/widget/<key>/tools/<name>` {token, arguments} → {output, say, ui_event, lead}: runs a server
  tool for a WebRTC call; `token` is a signature bound to (license, widget, conversation, model, max length).
- `POST /api/widget/<key>/voice/record` {token, turns?, usage?, end?} → {saved, end, warning}: the
  browser's transcript turns and token counts of its WebRTC call (realtime.services.webrtc_call_record).
- `POST /api/livekit/token[?license=<key>]` {license, widget?, visitor_id?, identity?, page_context?} → {server_url,
  participant_token}: the same checks as the relay (a concurrency slot is taken and held for the agent),
  then a LiveKit participant token for a room of the call's own (realtime/livekit.py).
- `POST /app/widgets/<public_id>/voice-preview/` {config} → {ws_path, expires_in, transport,
  draft_transport, max_session_seconds}: the configurator's test call on the unsaved draft (signed-in member, CSRF), a
  one-use ticket for `WS /ws/realtime/preview/<ticket>/` (realtime/preview.py).
`identity` (the token identify answered) and `page_context` ({page, title, referrer, context}) are read by
realtime.services.voice_context_read, as the relay reads its `session.context`: the session's instructions
carry them (WebRTC: in the client-secret request; LiveKit: in the dispatch metadata the server writes).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_POST
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from licenses.api import ApiError, error_response, json_object
from licenses.models import License
from licenses.selectors import license_get_public, membership_get
from realtime import events, preview
from realtime import livekit as lk
from realtime import services as svc
from realtime.client import ClientSecretError, client_secret_create
from realtime.session_config import session_config
from widgets.models import Conversation
from widgets.public import check_error, public_check, public_endpoint
from widgets.ratelimit import rate_hit
from widgets.selectors import openai_api_key, widget_get_for_user
from widgets.tools import TOOLS

logger = logging.getLogger(__name__)

TOOLS_TOKEN_SALT = "switchboard.realtime.tools"
CALL_TOKEN_GRACE_SECONDS = 120  # a call's token outlives its maximum length by this much (the last post)
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


def tools_token_make(
    *,
    license: License,
    widget_id: int,
    conversation_id: int,
    model: str = "",
    max_seconds: int = 0,
    slot: tuple[str, str] = ("", ""),
) -> str:
    """The WebRTC call's token: tools and the record endpoint accept it for this call only, until the call's
    maximum length (plus a grace) has passed. Model and length are signed in, so the browser cannot pick
    the prices its usage is billed at."""
    claims = {"l": license.pk, "w": widget_id, "c": conversation_id, "m": model, "s": max_seconds, "k": list(slot)}
    return signing.dumps(claims, salt=TOOLS_TOKEN_SALT, compress=True)


def tools_token_read(token: str) -> dict[str, Any] | None:
    max_age = settings.REALTIME_MAX_SESSION_SECONDS + CALL_TOKEN_GRACE_SECONDS
    try:
        data = signing.loads(token, salt=TOOLS_TOKEN_SALT, max_age=max_age)
    except signing.BadSignature:  # SignatureExpired included
        return None
    return data if isinstance(data, dict) else None


def call_max_seconds(claims: dict[str, Any]) -> int:
    signed = claims.get("s")
    ceiling = settings.REALTIME_MAX_SESSION_SECONDS
    return min(signed, ceiling) if isinstance(signed, int) and signed > 0 else ceiling


def call_conversation(*, token: str, license: License) -> tuple[Conversation | None, dict[str, Any]]:
    """The conversation a call token is for, if it belongs to this license and its time has not run out
    (its started_at + its maximum length + grace, on our clock). Another license's token, another widget's
    conversation, a forged or expired token: None."""
    claims = tools_token_read(token) or {}
    if not claims or claims.get("l") != license.pk:
        return None, {}
    conversation = (
        Conversation.objects.select_related("widget", "widget__published_version")
        .filter(pk=claims.get("c"), widget_id=claims.get("w"), widget__license=license, channel="voice")
        .first()
    )
    if conversation is None or conversation.widget.published_version is None:
        return None, {}
    age = (timezone.now() - conversation.started_at).total_seconds()
    if age > call_max_seconds(claims) + CALL_TOKEN_GRACE_SECONDS:
        return None, {}
    return conversation, claims


def call_slot(claims: dict[str, Any]) -> tuple[str, str] | None:
    slot = claims.get("k")
    if isinstance(slot, list) and len(slot) == 2 and all(isinstance(part, str) and part for part in slot):
        return slot[0], slot[1]
    return None


INVALID_TOKEN = ("invalid_token", "The call token is missing, expired or not for this call.")


def call_rate_limited(*, conversation: Conversation, what: str) -> JsonResponse | None:
    """429 once a WebRTC call's token was used more than WIDGET_CHAT_RATE_PER_MINUTE times this minute for
    `what` (tools, record), else None. Counted per call whatever the IP, so a replayed token is bounded
    (a real call reports every 15 s and runs a few tools a minute)."""
    count, retry_after = rate_hit(f"webrtc:{what}:{conversation.pk}")
    if count <= settings.WIDGET_CHAT_RATE_PER_MINUTE:
        return None
    response = error_response("rate_limited", "Too many requests for this call; wait a moment.", 429)
    response["Retry-After"] = str(retry_after)
    return response


def _voice_call_open(request: HttpRequest) -> tuple[dict[str, Any], Any, Any] | HttpResponse:
    """What every browser-side call transport (WebRTC, LiveKit) checks first, as the relay does: the JSON
    body, the license + Origin + voice minutes (fail closed), a published widget with voice on. Returns
    (body, license check, voice access), or the refusal to send."""
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
    return body, check, access


def _voice_context(body: dict[str, Any], access: svc.VoiceAccess) -> svc.VoiceContext | HttpResponse:
    """The body's `identity` (identify's token) and `page_context`, read by the chat path's rules."""
    try:
        return svc.voice_context_read(
            license=access.license,
            config=access.config,
            identity_token=body.get("identity"),
            page_context=body.get("page_context"),
        )
    except ApiError as exc:
        return _api_error(exc)


@public_endpoint(methods=("POST",), key_from="")
def client_secret(request: HttpRequest, license: License | None) -> HttpResponse:
    opened = _voice_call_open(request)
    if isinstance(opened, HttpResponse):
        return opened
    body, check, access = opened
    license = check.license
    context = _voice_context(body, access)
    if isinstance(context, HttpResponse):
        return context
    # The call holds one of the license's concurrency slots, as a relayed call does: kept by its reports,
    # freed by its end (realtime.services.webrtc_call_record), or by the TTL when its browser vanishes.
    slot_token = uuid.uuid4().hex
    try:
        slot = svc.voice_slot_acquire(license=license, token=slot_token, ttl=svc.WEBRTC_SLOT_SECONDS)
    except Exception:  # Redis unreachable: a clean "try again", as the relay answers (issue 11, finding 3)
        logger.warning("realtime: slot acquire failed", exc_info=True)
        refusal = svc.voice_refusal("server_busy")
        return error_response(refusal.code, refusal.message, 503)
    if slot is None:
        refusal = svc.voice_refusal("too_many_sessions")
        return error_response(refusal.code, refusal.message, 429)
    session = session_config(config=access.config, widget=access.widget, **context.session_kwargs())
    try:
        secret = client_secret_create(
            api_key=openai_api_key(secrets=access.widget.secrets),
            session=session,
            seconds=CLIENT_SECRET_SECONDS,
        )
    except ClientSecretError as exc:
        svc.voice_slot_release(key=slot, token=slot_token)
        return error_response(exc.code, exc.message, exc.status_code)
    # relayed=True: a heartbeat from the start, so a call whose browser never reports is reaped
    # (`worker_lost`); its first report takes it back (realtime.services.voice_usage_checkpoint).
    conversation = svc.voice_conversation_start(
        widget=access.widget, visitor_id=str(body.get("visitor_id") or "")[:128], relayed=True, context=context
    )
    Conversation.objects.filter(pk=conversation.pk).update(session_id="webrtc-" + conversation.session_id[:40])
    max_seconds = min(
        int(access.config["voice"].get("max_session_seconds", 900)), settings.REALTIME_MAX_SESSION_SECONDS
    )
    response = JsonResponse(
        {
            "value": secret["value"],
            "expires_at": secret["expires_at"],
            "model": session["model"],
            "calls_url": f"{settings.OPENAI_BASE_URL}/realtime/calls",
            "tools_token": tools_token_make(
                license=license,
                widget_id=access.widget.pk,
                conversation_id=conversation.pk,
                model=session["model"],
                max_seconds=max_seconds,
                slot=(slot, slot_token),
            ),
            "tools_url": f"/api/widget/{license.key}/tools/",
            "record_url": f"/api/widget/{license.key}/voice/record",
            "max_session_seconds": max_seconds,
        }
    )
    response["Cache-Control"] = "no-store"
    return response


@public_endpoint(methods=("POST",))
def tool_call(request: HttpRequest, license: License, name: str) -> HttpResponse:
    try:
        body = json_object(request, empty={})
    except ApiError as exc:
        return _api_error(exc)
    conversation, _claims = call_conversation(token=str(body.get("token") or ""), license=license)
    if conversation is None or not svc.webrtc_call_live(conversation):
        return error_response(*INVALID_TOKEN, 403)
    if name not in TOOLS:
        return error_response("unknown_tool", "No such tool.", 404)
    limited = call_rate_limited(conversation=conversation, what="tools")
    if limited is not None:
        return limited
    result = svc.voice_tool_run(
        widget=conversation.widget,
        config=conversation.widget.published_version.config,
        conversation_id=conversation.pk,
        name=name,
        arguments=body.get("arguments"),
    )
    lead = {"source": result.lead_source} if result.lead_source else None
    return JsonResponse({"output": result.output(), "say": result.speak, "ui_event": result.ui_event, "lead": lead})


@public_endpoint(methods=("POST",), key_from="")
def livekit_token(request: HttpRequest, license: License | None) -> HttpResponse:
    """LiveKit's token-endpoint convention: `{server_url, participant_token}`. Refusals answer as the
    client-secret endpoint does; a site whose license check fails learns nothing of LiveKit."""
    opened = _voice_call_open(request)
    if isinstance(opened, HttpResponse):
        return opened
    body, check, access = opened
    if access.config["voice"].get("transport") != "livekit":
        return error_response("wrong_transport", "This widget's voice does not use LiveKit.", 409)
    if not lk.livekit_configured():
        return error_response("livekit_not_configured", "LiveKit is not configured on this server.", 503)
    context = _voice_context(body, access)
    if isinstance(context, HttpResponse):
        return context
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
            widget=access.widget, visitor_id=str(body.get("visitor_id") or "")[:128], relayed=True, context=context
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
        identity=context.identity,
        page_context=context.page_context or {},
    )
    response = JsonResponse(
        {"server_url": settings.LIVEKIT_URL, "participant_token": lk.participant_token_create(metadata=metadata)}
    )
    response["Cache-Control"] = "no-store"
    return response


RECORD_MAX_BYTES = 64 * 1024
RECORD_MAX_TURNS = 16
_COUNT = {"type": "integer", "minimum": 0, "maximum": 100_000_000}
_DETAILS = {
    "type": "object",
    "properties": {"text_tokens": _COUNT, "audio_tokens": _COUNT, "image_tokens": _COUNT},
    "additionalProperties": False,
}
RECORD_SCHEMA = {
    "type": "object",
    "required": ["token"],
    "additionalProperties": False,
    "properties": {
        "token": {"type": "string", "minLength": 1, "maxLength": 1000},
        "turns": {
            "type": "array",
            "maxItems": RECORD_MAX_TURNS,
            "items": {
                "type": "object",
                "required": ["role", "text", "item_id"],
                "additionalProperties": False,
                "properties": {
                    "role": {"enum": ["user", "assistant"]},
                    "text": {"type": "string", "minLength": 1, "maxLength": 4000},
                    "item_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                },
            },
        },
        # The GA `response.done` usage shape, summed over the call's responses so far (cumulative).
        "usage": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "total_tokens": _COUNT,
                "input_tokens": _COUNT,
                "output_tokens": _COUNT,
                "input_token_details": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        **_DETAILS["properties"],
                        "cached_tokens": _COUNT,
                        "cached_tokens_details": _DETAILS,
                    },
                },
                "output_token_details": _DETAILS,
            },
        },
        "end": {"enum": list(svc.WEBRTC_END_REASONS)},
    },
}
_RECORD_VALIDATOR = Draft202012Validator(RECORD_SCHEMA)


def _shape_error(body: dict[str, Any]) -> JsonResponse | None:
    """400 `invalid` naming the first field that breaks RECORD_SCHEMA, or None."""
    error = best_match(_RECORD_VALIDATOR.iter_errors(body))
    if error is None:
        return None
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".") or "body"
    limits = {
        "maxLength": "is too long (at most {} characters)",
        "maxItems": "has too many items (at most {})",
        "maximum": "is too large (at most {})",
    }
    if error.validator in limits:
        message = f"{field} {limits[error.validator].format(error.validator_value)}."
    else:
        message = f"{field}: {error.message[:200]}"
    return error_response("invalid", message, 400, fields={field: [message]})


@public_endpoint(methods=("POST",))
def call_record(request: HttpRequest, license: License) -> HttpResponse:
    """A WebRTC call's transcript turns and token counts, posted by the browser with its call token."""
    try:
        body = json_object(request, max_bytes=RECORD_MAX_BYTES)
    except ApiError as exc:
        return _api_error(exc)
    problem = _shape_error(body)
    if problem is not None:
        return problem
    conversation, claims = call_conversation(token=body["token"], license=license)
    if conversation is None:
        return error_response(*INVALID_TOKEN, 403)
    limited = call_rate_limited(conversation=conversation, what="record")
    if limited is not None:
        return limited
    now = timezone.now()
    if not svc.webrtc_call_live(conversation) and (
        (now - conversation.ended_at).total_seconds() > svc.WEBRTC_TURN_GRACE_SECONDS
    ):
        return error_response("call_ended", "This call has ended.", 409)
    record = svc.webrtc_call_record(
        conversation=conversation,
        model=str(claims.get("m") or settings.REALTIME_DEFAULT_MODEL),
        max_seconds=call_max_seconds(claims),
        turns=body.get("turns") or [],
        usage=body.get("usage"),
        end=body.get("end") or "",
        slot=call_slot(claims),
        now=now,
    )
    return JsonResponse(
        {
            "saved": record.saved,
            "end": {"reason": record.end, "message": events.END_MESSAGES.get(record.end, "The call ended.")}
            if record.end
            else None,
            "warning": {"code": record.warning, "message": WARNINGS[record.warning]} if record.warning else None,
        }
    )


WARNINGS = {
    "voice_minutes_low": "This site's voice minutes are almost used up.",
    "session_time_low": "This call will end in less than 30 seconds.",
}


@require_POST
def voice_preview_ticket(request: HttpRequest, public_id: str) -> HttpResponse:
    """The configurator preview's test call: the member's unsaved draft `{config}` (merged over the saved
    draft and validated like `preview-config`) stored under a one-use ticket (realtime/preview.py). CSRF
    applies (session auth); anonymous 403, another agency's widget 404, a bad draft 400 naming the field."""
    user = request.user
    if not user.is_authenticated:
        return error_response("not_authenticated", "Sign in to try voice on a draft.", 403)
    try:
        widget, _membership = widget_get_for_user(user=user, public_id=public_id)
    except Http404:
        return error_response("widget_not_found", "Widget not found.", 404)
    try:
        body = json_object(request, empty={})
        ticket, config = preview.voice_preview_ticket_create(
            widget=widget, user_id=user.pk, draft=body.get("config", {})
        )
    except ApiError as exc:
        response = error_response(exc.code, exc.message, exc.status_code, fields=exc.fields or None)
        if exc.code == "rate_limited":
            response["Retry-After"] = str(exc.fields["retry_after"])
        return response
    response = JsonResponse(
        {
            "ws_path": f"/ws/realtime/preview/{ticket}/",
            "expires_in": preview.TICKET_SECONDS,
            "transport": "relay",  # every draft is tried over the relay (realtime/preview.py)
            "draft_transport": config["voice"]["transport"],
            "max_session_seconds": preview.voice_preview_max_seconds(config),
        },
        status=201,
    )
    response["Cache-Control"] = "no-store"
    return response
