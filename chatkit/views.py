"""ChatKit views: the iframe page, session minting (public and preview) and the reserved server URL.

Thin: access through selectors (`license_get_public`, `widget_get_for_user`, `chatkit_widget_*`),
rules in chatkit/options.py, chatkit/tokens.py and chatkit/services.py, the upstream call in chatkit/client.py.

How the public session endpoint authorises the ChatKit iframe (DESIGN: public calls fail closed):
the iframe page lives on OUR origin, so its session calls carry our own Origin. The page is only
rendered for an embedding origin (`?origin=`, else the Referer's origin) that passes the license
check, and it carries a signed page token bound to license + widget + that origin. A session call
whose Origin is our own host must present that token, and the token's origin is checked against
the license again (so removing a domain takes effect at once). Calls from customer origins are
checked directly against the allowed domains. A missing or `null` Origin is always refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import redis
from django.conf import settings
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware, get_token
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from pydantic import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatkit.agent_server import REQUEST, SwitchboardChatKitServer
from chatkit.client import ChatKitError, chatkit_error
from chatkit.options import (
    chatkit_color_scheme_auto,
    chatkit_mode,
    chatkit_model,
    chatkit_options,
    chatkit_setup_problem,
)
from chatkit.selectors import ServerEntry, chatkit_server_cache, chatkit_widget_draft, chatkit_widget_published
from chatkit.serializers import PreviewOptionsRequestSerializer, PreviewOptionsSerializer
from chatkit.server import StreamingResult
from chatkit.services import (
    chatkit_rate_check,
    chatkit_rate_check_async,
    chatkit_thread_reserve,
    chatkit_thread_unreserve,
)
from chatkit.store import NotFoundError
from chatkit.threads import RequestContext
from chatkit.tokens import (
    chatkit_user_id,
    page_token_issue,
    session_caller_resolve,
    visitor_token_issue,
    visitor_token_read,
)
from chatkit.types import ThreadsAddUserMessageReq, ThreadsCreateReq, is_streaming_req
from licenses.api import ApiError, error_response, json_object
from licenses.domains import frame_ancestors, same_origin
from licenses.identity import identity_owner_key, identity_require_check, identity_token_read
from licenses.models import License
from licenses.selectors import (
    REASON_MESSAGES,
    license_cache_generation,
    license_cache_key,
    license_check,
    license_get_public,
    license_status_reason,
)
from widgets.aio import db_step, pg_async_available
from widgets.config_schema import ConfigError, config_normalize
from widgets.models import Widget
from widgets.page_context import page_context_for_agents, page_context_header
from widgets.public import public_endpoint, request_origin
from widgets.selectors import openai_api_key, preview_link_resolve, widget_get_for_user

logger = logging.getLogger(__name__)


def _error(exc: ChatKitError) -> JsonResponse:
    return error_response(exc.code, exc.message, exc.status_code)


def _own_origin(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


def _referer_origin(request: HttpRequest) -> str | None:
    parts = urlsplit(request.headers.get("Referer", ""))
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


# --- POST /api/chatkit/sessions and /api/chatkit/preview-sessions: hosted mode, retired ---------------


def _hosted_retired() -> JsonResponse:
    exc = chatkit_error("hosted_retired")
    response = error_response(exc.code, exc.message, exc.status_code)
    response["Cache-Control"] = "no-store"
    return response


@public_endpoint(methods=("POST",), key_from="", preflight_any_origin=True)
def session_create(request: HttpRequest, license: None) -> HttpResponse:
    """Hosted Agent Builder sessions: OpenAI shut Agent Builder down on 2026-11-30. Answers 410
    `hosted_retired` without calling OpenAI (the upstream's answer would only mislead). A hostile
    body is still refused for what it is first (the shared body rule)."""
    try:
        json_object(request, empty={})
    except ApiError as exc:
        return error_response(exc.code, exc.message, exc.status_code)
    return _hosted_retired()


@csrf_exempt
def preview_session_create(request: HttpRequest) -> HttpResponse:
    """The configurator's hosted preview sessions: retired like the public ones."""
    if request.method != "POST":
        return error_response("method_not_allowed", "Use POST.", 405)
    return _hosted_retired()


# --- POST /api/chatkit/preview-options (configurator: live theme edits) ------------------------------


class PreviewOptionsView(APIView):
    """The ChatKit options for an UNSAVED draft, so the preview page follows edits live.

    The draft (partial or whole) is merged over the saved draft and validated like a save would,
    then mapped by `chatkit_options` (the one mapping). Nothing is saved; no secret is in the answer.
    Signed-in member of the widget's agency (any role), CSRF-protected session auth.
    """

    @extend_schema(
        request=PreviewOptionsRequestSerializer,
        responses=PreviewOptionsSerializer,
        summary="ChatKit options for an unsaved draft config (configurator preview)",
    )
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
            raise exc.api_error()
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
    request: HttpRequest,
    *,
    license: License,
    widget: Widget,
    config: dict[str, Any],
    origin: str | None,
    preview: bool,
    share: str = "",
) -> HttpResponse:
    page: dict[str, Any] = {
        "preview": preview,
        "license": license.key,
        "widget": widget.public_id,
        "autoColorScheme": chatkit_color_scheme_auto(config),
        # Placeholder domain key: ChatKit checks none on localhost; production registers its host.
        "domainKey": settings.CHATKIT_DOMAIN_KEY or "local-dev",
        "loadTimeoutMs": settings.CHATKIT_LOAD_TIMEOUT_MS,
        "scriptUrl": settings.CHATKIT_JS_URL,
    }
    api_url = reverse("chatkit:server", kwargs={"license_key": license.key})
    if share:
        # A share link: signed out, the link's draft, never counted; each browser its own visitor.
        page["apiUrl"] = f"{api_url}?{urlencode({'share': share})}"
        page["visitorToken"] = _visitor_token(request, license=license)
    elif preview:
        page["apiUrl"] = f"{api_url}?preview={widget.public_id}"
        page["optionsUrl"] = reverse("chatkit:preview-options")
        page["csrfToken"] = get_token(request)
    else:
        assert origin is not None
        page["apiUrl"] = api_url
        page["token"] = page_token_issue(license=license, widget=widget, origin=origin)
        page["visitorToken"] = _visitor_token(request, license=license)
        page["embedOrigin"] = origin
    context = {
        "options": chatkit_options(config),
        "page": page,
        "problem": chatkit_setup_problem(widget=widget, config=config, member=bool(preview)),
        "hosted": chatkit_mode(config) == "hosted",
        "lang": config["behaviour"]["locale"] or "en",
    }
    response = render(request, "chatkit/page.html", context)
    ancestors = "'self'" if preview else frame_ancestors(license.allowed_domains)
    response["Content-Security-Policy"] = f"frame-ancestors {ancestors}"
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _visitor_token(request: HttpRequest, *, license: License) -> str:
    """The page's visitor: the signed id the embedding site's loader kept from an earlier visit (`?vt=`,
    first-party storage: this cross-site frame usually has none), else a new one. `vt` counts only when
    the browser loads the page as a frame (`Sec-Fetch-Dest: iframe`, as the widget bundle does): opened
    top-level, a link carrying someone else's token would otherwise make the reader chat as that
    visitor, whose holder could then read the chat (visitor fixation)."""
    kept = request.GET.get("vt", "")
    if kept and request.META.get("HTTP_SEC_FETCH_DEST") == "iframe" and visitor_token_read(license=license, token=kept):
        return kept
    return visitor_token_issue(license=license)


@xframe_options_exempt
@require_GET
def page(request: HttpRequest, license_key: str) -> HttpResponse:
    """The ChatKit iframe for a customer page. `?widget=<public_id>` picks the widget and
    `?origin=<embedding page origin>` names the customer page (the Referer's origin otherwise)."""
    license = license_get_public(key=license_key)
    reason = license_status_reason(license=license)
    if reason != "ok":
        return _problem(
            request,
            status=404 if reason == "unknown_license" else 403,
            title="Chat unavailable",
            message=REASON_MESSAGES[reason],
        )
    assert license is not None
    referer = _referer_origin(request)
    if not referer:
        # A browser always sends the framing page's origin here (the loader's iframe asks for it with
        # referrerpolicy="origin"); without one, `?origin=` would be an unproven claim that lets any
        # page open this one top-level and spend the license's sessions.
        return _problem(
            request, status=403, title="Chat unavailable", message="Open this chat from the website that embeds it."
        )
    origin = request.GET.get("origin") or referer
    check = license_check(license=license, origin=origin)
    if not check.ok:
        return _problem(request, status=check.http_status, title="Chat unavailable", message=check.message)
    if referer and not same_origin(referer, _own_origin(request)) and not same_origin(referer, origin):
        return _problem(
            request,
            status=403,
            title="Chat unavailable",
            message="The page embedding this chat is not the one it claims to be.",
        )
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


@xframe_options_exempt
@require_GET
def share_page(request: HttpRequest, token: str) -> HttpResponse:
    """A share link's ChatKit page: the link's saved draft for whoever holds an unexpired, unrevoked link
    (framed by the share page on our own origin). Chats run as previews: rate limited, never counted."""
    lookup = preview_link_resolve(token=token)
    if not lookup.ok or lookup.link is None:
        _code, message, status = lookup.refusal()
        if lookup.reason == "invalid":
            status, message = 404, "No such preview link."
        return _problem(request, status=status, title="Preview unavailable", message=message)
    widget = lookup.link.widget
    try:
        config = chatkit_widget_draft(widget=widget)
    except ChatKitError as exc:
        return _problem(request, status=exc.status_code, title="No preview", message=exc.message)
    return _page(request, license=widget.license, widget=widget, config=config, origin=None, preview=True, share=token)


# --- POST /api/chatkit/<license_key>/: our own ChatKit server (ChatKit's `api.url`) -----------------

SERVER = SwitchboardChatKitServer()


def _public_call(request: HttpRequest) -> bool:
    """A call of the embedded page (not the configurator's preview nor a share link's chat)."""
    return not request.GET.get("share", "") and not request.GET.get("preview", "")


class _Uncached(Exception):
    """The loop path (`_prepare_async`) would need the database: the step path serves the request instead."""


def _server_context(
    request: HttpRequest, license_key: str, entry: ServerEntry | None = None, *, cached_only: bool = False
) -> RequestContext:
    """Every check before a byte is read as ChatKit input: license + page token + Origin (fail closed),
    the signed visitor, the widget (published, ChatKit, server mode, a key). Raises ChatKitError.
    `entry`: the license and widgets from this process's cache, not yet proven current (`_prepare` does).

    The ChatKit element runs in OUR iframe page, so calls come from our own origin with the page's
    token, which names the embedding site (checked against the license again, so removing a domain
    takes effect at once). The configurator preview (`?preview=<public_id>`) is a signed-in member
    of the widget's agency with CSRF, against the draft config, never counted."""
    license = entry.license if entry is not None else license_get_public(key=license_key)
    own = _own_origin(request)
    if not same_origin(request_origin(request), own):
        check = license_check(license=license, origin=request_origin(request))
        raise ChatKitError(
            check.reason if not check.ok else "wrong_origin",
            check.message if not check.ok else "Call this endpoint from the ChatKit page.",
            403,
        )
    share = request.GET.get("share", "")
    if share:
        return _share_context(request, license_key=license_key, token=share)
    preview_id = request.GET.get("preview", "")
    if preview_id:
        return _preview_context(request, license_key=license_key, public_id=preview_id)
    caller = session_caller_resolve(
        origin=request_origin(request),
        own_origin=own,
        token=request.headers.get("X-Switchboard-Page-Token"),
        license_key=license_key,
        widget_id="",
    )
    check = license_check(license=license, origin=caller.origin)
    if not check.ok:
        raise ChatKitError(check.reason, check.message, check.http_status)
    assert license is not None
    visitor = visitor_token_read(license=license, token=request.headers.get("X-Switchboard-Visitor"))
    if visitor is None:
        raise ChatKitError("visitor_invalid", "The visitor id is missing or invalid; reload the page.", 403)
    # Switchboard('identify') (issue 15.2): relayed by our ChatKit page from the widget around it. The
    # thread owner follows the identity, so two users never see each other's threads.
    try:
        identity = identity_token_read(license=license, token=request.headers.get("X-Switchboard-Identity", ""))
        identity_require_check(license=license, identity=identity)
    except ApiError as exc:
        raise ChatKitError(exc.code, exc.message, exc.status_code)
    cached = entry.widgets.get(caller.widget_id) if entry is not None and caller.widget_id else None
    if cached is None and cached_only:
        raise _Uncached
    widget, config = cached or chatkit_widget_published(license=license, public_id=caller.widget_id)
    widget.license = license  # read by the store and the tools: never a lazy query
    who = identity_owner_key(identity, visitor=visitor) if identity is not None else visitor
    context = _context(
        license=license, widget=widget, config=config, owner=chatkit_user_id(license=license, visitor_id=who)
    )
    context.identity = identity.as_dict() if identity is not None else {}
    return context


def _preview_context(request: HttpRequest, *, license_key: str, public_id: str) -> RequestContext:
    if not request.user.is_authenticated:
        raise ChatKitError("not_authenticated", "Sign in to preview this widget.", 403)
    reason = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})
    if reason is not None:
        raise ChatKitError("csrf_failed", "The preview's CSRF token is missing or wrong; reload the page.", 403)
    try:
        widget, _membership = widget_get_for_user(user=request.user, public_id=public_id[:40])
    except Http404:
        raise ChatKitError("widget_not_found", "No such widget.", 404)
    if widget.license.key != license_key:
        raise ChatKitError("widget_not_found", "No such widget.", 404)
    reason = license_status_reason(license=widget.license)
    if reason != "ok":
        raise ChatKitError(reason, REASON_MESSAGES[reason], 403)
    config = chatkit_widget_draft(widget=widget)
    owner = chatkit_user_id(license=widget.license, visitor_id=f"preview:{request.user.pk}")
    return _context(license=widget.license, widget=widget, config=config, owner=owner, preview=True)


def _share_context(request: HttpRequest, *, license_key: str, token: str) -> RequestContext:
    """A share link's chat: the link must be live and name this license's widget; the caller is the
    signed visitor its page issued (so two holders of one link never see each other's threads)."""
    lookup = preview_link_resolve(token=token[:300])
    if lookup.link is not None and lookup.link.widget.license.key != license_key:
        raise ChatKitError("widget_not_found", "No such widget.", 404)
    if not lookup.ok or lookup.link is None:
        raise ChatKitError(*lookup.refusal())
    widget = lookup.link.widget
    visitor = visitor_token_read(license=widget.license, token=request.headers.get("X-Switchboard-Visitor"))
    if visitor is None:
        raise ChatKitError("visitor_invalid", "The visitor id is missing or invalid; reload the page.", 403)
    config = chatkit_widget_draft(widget=widget)
    owner = chatkit_user_id(license=widget.license, visitor_id=f"share:{lookup.link.token_id}:{visitor}")
    context = _context(license=widget.license, widget=widget, config=config, owner=owner, preview=True)
    context.rate_key = f"share:{lookup.link.token_id}"
    return context


def _context(
    *, license: License, widget: Widget, config: dict[str, Any], owner: str, preview: bool = False
) -> RequestContext:
    if chatkit_mode(config) == "hosted":
        raise chatkit_error("hosted_retired")
    api_key = openai_api_key(secrets=widget.secrets)
    if not api_key:
        raise chatkit_error("not_configured")
    return RequestContext(
        license=license,
        widget=widget,
        config=config,
        owner=owner,
        api_key=api_key,
        model=chatkit_model(config),
        preview=preview,
    )


def _page_context(request: HttpRequest, config: dict[str, Any]) -> dict[str, Any] | None:
    """`X-Switchboard-Context` (the embedding page's context, relayed by our ChatKit page): checked
    always, kept only when the widget sends page context (behaviour.page_context). Raises ChatKitError."""
    raw = request.headers.get("X-Switchboard-Context")
    if not raw:
        return None
    try:
        context = page_context_header(raw)
    except ApiError as exc:
        raise ChatKitError(exc.code, exc.message, exc.status_code)
    return page_context_for_agents(context, config=config)


def _params_ids(req: Any) -> tuple[str, str]:
    """The (thread id, item id) a request names, if any: checked before anything streams."""
    params = getattr(req, "params", None)
    thread_id = getattr(params, "thread_id", "") or ""
    item_id = getattr(params, "item_id", "") or ""
    return thread_id, item_id


@dataclass
class _Prepared:
    context: RequestContext | None = None
    req: Any = None
    refusal: HttpResponse | None = None


def _request_parse(request: HttpRequest) -> Any:
    """The body as one ChatKit request. Raises ChatKitError."""
    try:
        # The shared body rule (size, Content-Type, UTF-8, no NUL or lone surrogates, depth), then
        # the ChatKit request shape.
        data = json_object(request, max_bytes=settings.CHATKIT_MAX_BODY_BYTES)
    except ApiError as exc:
        raise ChatKitError(exc.code, exc.message, exc.status_code)
    try:
        return REQUEST.validate_python(data)
    except ValidationError:
        raise ChatKitError("invalid_request", "Send one ChatKit request as JSON.", 400)


def _prepare(request: HttpRequest, license_key: str, peeked: tuple[int | None, object] | None = None) -> _Prepared:
    """Everything before streaming, in ONE trip to the ORM thread: who is calling, the body, the rate
    limits, the thread's owner; for a new thread its rows and the monthly count, in one transaction.
    A refusal is a JSON error.

    The embedded page's calls resolve the license and widget from this process's cache
    (`chatkit_server_cache`) and prove it current with the license's cache generation, read in the rate
    limiter's Redis round trip: when it changed (or the entry is new) everything is resolved again from
    the database before anything is served. A refusal is never decided on cached rows. `peeked`: the rate
    limiter's answer when the caller (`_prepare_async`) already counted this request."""
    public = _public_call(request)
    entry = chatkit_server_cache.get(license_key) if public else None
    try:
        try:
            context = _server_context(request, license_key, entry)
        except ChatKitError:
            if entry is None:
                raise
            chatkit_server_cache.drop(license_key)
            entry = None
            context = _server_context(request, license_key)
        context.page_context = _page_context(request, context.config)
        req = _request_parse(request)
        wait, generation = peeked or chatkit_rate_check(
            license=context.license,
            owner=context.rate_key or context.owner,
            generates=is_streaming_req(req),
            peek=license_cache_key(license_key) if public else None,
        )
        if public:
            if entry is None or generation is None or generation != entry.token:
                # New or out of date: everything again from the database, read after the generation.
                chatkit_server_cache.drop(license_key)
                context = _server_context(request, license_key)
                context.page_context = _page_context(request, context.config)
                if generation is not None:
                    entry = ServerEntry(context.license, generation)
                    chatkit_server_cache.put(license_key, entry)
                else:
                    _generation_ensure(license_key)
            if entry is not None:
                entry.widgets.setdefault(context.widget.public_id, (context.widget, context.config))
        if wait:
            return _Prepared(refusal=_rate_limited(wait))
        params = getattr(req, "params", None)
        if getattr(getattr(params, "input", None), "attachments", None):
            raise ChatKitError("attachments_disabled", "Attachments are not available in this chat.", 400)
        thread_id, item_id = _params_ids(req)
        try:
            # Ownership BEFORE streaming: an error after the 200 could only abort the connection.
            if thread_id:
                thread = SERVER.store.thread_row(thread_id, context)
                if item_id:
                    SERVER.store.item_row(thread, item_id)
        except NotFoundError:
            raise ChatKitError("not_found", "No such conversation.", 404)
        if isinstance(req, ThreadsCreateReq):
            # The monthly count (unless a preview; one statement), then the new thread's rows in one
            # transaction, before streaming; a count whose thread could not be written is given back.
            if not context.preview:
                chatkit_thread_reserve(license=context.license)
                context.reserved_thread = True
            try:
                with transaction.atomic():
                    SERVER.store.thread_open(context)
            except Exception:
                if context.reserved_thread:
                    chatkit_thread_unreserve(license=context.license)
                raise
        return _Prepared(context=context, req=req)
    except ChatKitError as exc:
        return _Prepared(refusal=_error(exc))


def _rate_limited(wait: int) -> HttpResponse:
    response = error_response("rate_limited", "Too many messages; wait a moment and try again.", 429)
    response["Retry-After"] = str(wait)
    return response


async def _prepare_async(request: HttpRequest, license_key: str) -> _Prepared:
    """`_prepare`, with its hot path on the running loop: an embedded page's new thread or next message whose
    license and widget are in this process's cache is checked (the same checks, in the same order), counted in
    the rate limiter's round trip (redis.asyncio, which proves the cache current), then a new thread is opened
    with its monthly count in ONE statement (`DjangoStore.thread_open_counted`) and a next message's thread is
    read as the visitor's own (`DjangoStore.thread_own_async`), on widgets.aio.pg_async, with no DB-step thread
    (issue 8 bench: at 50 conversations at once, the pre-stream step spent most of its time waiting for its
    thread and the GIL). Anything else — not cached, out of date, a refusal, a rate limit, another request
    type, no month row yet, the cap reached, a thread that is not found — is `_prepare` in a DB step (given the
    count already taken), so every refusal is still decided there on the database's current rows."""
    entry = chatkit_server_cache.get(license_key) if _public_call(request) else None
    if entry is None or not settings.REDIS_URL or not pg_async_available():
        return await db_step(_prepare, request, license_key)
    try:
        context = _server_context(request, license_key, entry, cached_only=True)
        context.page_context = _page_context(request, context.config)
        req = _request_parse(request)
    except (ChatKitError, _Uncached):
        return await db_step(_prepare, request, license_key)
    peeked = await chatkit_rate_check_async(
        license=context.license,
        owner=context.rate_key or context.owner,
        generates=is_streaming_req(req),
        peek=license_cache_key(license_key),
    )
    wait, generation = peeked
    current = generation is not None and generation == entry.token
    if wait and current:
        return _Prepared(refusal=_rate_limited(wait))
    if wait or not current:
        return await db_step(_prepare, request, license_key, peeked)
    if isinstance(req, ThreadsCreateReq):
        ready = not req.params.input.attachments and await SERVER.store.thread_open_counted(context)
    elif isinstance(req, ThreadsAddUserMessageReq):  # a visitor's next message: its thread must be its own
        ready = not req.params.input.attachments and await SERVER.store.thread_own_async(req.params.thread_id, context)
    else:
        ready = False
    if not ready:
        return await db_step(_prepare, request, license_key, peeked)
    return _Prepared(context=context, req=req)


def _generation_ensure(key: str) -> None:
    """Give the license a cache generation when it has none yet (the next request can then cache);
    nothing when the cache cannot be reached (rate limits degrade, the server goes on uncached)."""
    try:
        license_cache_generation(key=key)
    except (redis.RedisError, OSError) as exc:
        logger.info("license cache generation unreadable (%s): ChatKit served uncached", exc.__class__.__name__)


@csrf_exempt
async def server(request: HttpRequest, license_key: str) -> HttpResponse:
    """ChatKit's `api.url`: one JSON request, answered with SSE (streaming ops) or JSON.

    Refusals are JSON errors before anything streams: 403 origin/token/visitor, 404 unknown or
    foreign thread (never another visitor's), 400 malformed body, 410 hosted widget, 429 rate or
    monthly cap. Served under ASGI (Daphne): a visitor's wait on OpenAI holds no thread or DB
    connection."""
    if request.method != "POST":
        response = error_response("method_not_allowed", "Use POST.", 405)
        response["Allow"] = "POST"
        return response
    prepared = await _prepare_async(request, license_key)
    if prepared.refusal is not None:
        prepared.refusal["Cache-Control"] = "no-store"
        return prepared.refusal
    try:
        result = await SERVER.process_parsed(prepared.req, prepared.context)
    except NotFoundError:
        response = error_response("not_found", "No such conversation.", 404)
        response["Cache-Control"] = "no-store"
        return response
    if isinstance(result, StreamingResult):
        response = StreamingHttpResponse(result, content_type="text/event-stream")
        response["X-Accel-Buffering"] = "no"  # nginx and friends must not buffer the stream
    else:
        response = HttpResponse(result.json, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response
