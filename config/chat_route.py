"""The public chat's short route through Django (issue 11 bench): `POST /api/widget/<key>/chat` under ASGI, and
the embedded ChatKit page's `POST /api/chatkit/<key>/` (issue 8 bench; not its configurator preview or share
links, which need the session and CSRF or go the full way).

Every chat turn of every visitor comes here, and Django's full handler spent more CPU on it than the
chat itself (bench/chat_proxy.py, py-spy): two signals sent through a thread each, the URL resolver,
fourteen middlewares (sessions, auth, messages, CSRF, history, axes… none of which this csrf-exempt,
cookie-less JSON endpoint uses), and `response.close()` in a thread. This route runs the same view
(`widgets.views.embed.chat`, with its `public_endpoint` guard: license, Origin, CORS, fail closed; or
`chatkit.views.server`, with its page token, visitor and license checks) with only the middleware hooks that
can change its answer, taken from the same classes the settings list, so the answer is the same as through the
full stack (`widgets/tests/test_chat_route.py` and `chatkit/tests/test_short_route.py` compare them header by
header). The n8n chat sends no `request_finished` while only Django's own receivers listen (`_close_chat`). For
ChatKit it also takes the two thread hops (request_started, request_finished through Django's
one thread-sensitive thread) out of the path to `thread.created`: at 50 conversations at once every request
queued for that one thread (bench/README-chatkit.md):

- the host check of `CustomHostMiddleware` (settings' ALLOWED_HOSTS or a verified custom domain) and the
  host's agency it names (on an agency's own domain no other agency's license is served),
- `HostileInputMiddleware`: NUL refusals, and the JSON error shape for any exception the view raises,
- `SecurityMiddleware` (HTTPS redirect, nosniff, referrer policy, HSTS, COOP), `CommonMiddleware`
  (Content-Length) and `XFrameOptionsMiddleware`.

Anything unusual goes the full way instead, untouched (the body read here is replayed to it): another
method (OPTIONS preflight, GET), no or a too large Content-Length, a host Django would refuse or that
needs the custom-domain map reloaded, a script prefix, DISALLOWED_USER_AGENTS or PREPEND_WWW. A visitor
who leaves cancels the view, as Django's handler does.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import close_caches
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.core.handlers.base import reset_urlconf
from django.core.signals import request_finished
from django.db import close_old_connections
from django.dispatch.dispatcher import _make_id
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.log import log_response

from chatkit.admission import Admission, admitting
from config.hosts import CustomHostMiddleware, _needs_refresh
from config.middleware import HostileInputMiddleware
from licenses.hosts import request_host_agency
from widgets.aio import upstream_home
from widgets.chat_stream import AsyncRelay

CHAT_PATH = re.compile(r"/api/widget/([^/]{1,64})/chat")
CHATKIT_PATH = re.compile(r"/api/chatkit/([^/]{1,64})/")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _unused(request: HttpRequest) -> HttpResponse:  # the middlewares' get_response: never called here
    raise AssertionError("the chat route calls middleware hooks only")


class ChatRoute:
    """ASGI app: the chat's short route, everything else (and anything unusual) to `django`."""

    def __init__(self, django: ASGIHandler) -> None:
        self.django = django
        self._hooks: tuple[Any, ...] | None = None

    def hooks(self) -> tuple[Any, ...]:
        if self._hooks is None:
            from chatkit.views import server as chatkit_server  # the URLconf's views (apps are loaded by now)
            from widgets.views.embed import chat

            self._hooks = (
                CustomHostMiddleware(_unused),
                HostileInputMiddleware(_unused),
                SecurityMiddleware(_unused),
                CommonMiddleware(_unused),
                XFrameOptionsMiddleware(_unused),
                {"chat": chat, "chatkit": chatkit_server},
            )
        return self._hooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _route(scope) if scope["type"] == "http" else None
        if route is None:
            return await self.django(scope, receive, send)
        name, key = route
        upstream_home()  # this server's loop runs the n8n calls itself (widgets/aio.py)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request, _ = self.django.create_request(scope, io.BytesIO(body))
        if request is None or not self._short(request):
            return await self.django(scope, _replay(bytes(body), receive), send)
        # The host's agency for this request, as CustomHostMiddleware names it on the full stack: on an
        # agency's own domain another agency's license is unknown (licenses.hosts.host_serves_agency).
        token = request_host_agency.set(request.custom_domain_agency_id)  # named by `_short`'s host check
        try:
            if name == "chatkit":
                with admitting() as admission:  # the running answers yield until its first byte
                    await admission.turn()  # a few new requests at a time (chatkit.admission)
                    await self._serve(request, name, key, receive, _first_byte(send, admission))
            else:
                await self._serve(request, name, key, receive, send, close=_close_chat)
        finally:
            request_host_agency.reset(token)

    def _short(self, request: ASGIRequest) -> bool:
        """The host is one Django accepts without a database read (else the full stack decides)."""
        if _needs_refresh(request) or self.hooks()[0]._refusal(request) is not None:
            return False
        try:
            request.get_host()
        except DisallowedHost:
            return False
        return True

    async def _serve(
        self,
        request: ASGIRequest,
        name: str,
        key: str,
        receive: Receive,
        send: Send,
        close: Callable[[HttpResponseBase], None] = HttpResponseBase.close,
    ) -> None:
        # The view runs in this task (a task of its own started one loop turn later: under 200 visitors a turn is
        # ~1 ms of other requests' work, issue 11 bench); a visitor who leaves cancels it from `leave`.
        task = asyncio.current_task()
        assert task is not None
        state = {"serving": True, "left": False}

        def leave(_: asyncio.Future[Any]) -> None:
            if state["serving"]:  # not once the answer is out (receive() then says http.disconnect too)
                state["left"] = True
                task.cancel()

        leaving = asyncio.ensure_future(receive())  # resolves when the visitor leaves (http.disconnect)
        leaving.add_done_callback(leave)
        try:
            response = await self._answer(request, name, key, send)
        except asyncio.CancelledError:
            if not state["left"]:  # the server stops
                raise
            task.uncancel()  # ours: the view is stopped, as Django does, and the request is over
            return
        finally:
            state["serving"] = False
            leaving.remove_done_callback(leave)
            leaving.cancel()
        if state["left"]:  # the visitor left while the answer was sent (`_answer` let the cancel go)
            task.uncancel()
        close(response)  # a streamed relay's closer frees its permit and upstream

    async def _answer(self, request: ASGIRequest, name: str, key: str, send: Send) -> HttpResponse:
        _host, hostile, security, common, xframe, views = self.hooks()
        view = views[name]
        # The settings' order: Security, then HostileInput, …, Common, …, X-Frame-Options, the view.
        response = security.process_request(request) or hostile._refusal(request)
        if response is not None:
            outer: tuple[Any, ...] = (security,)  # refused before the inner middlewares
        else:
            outer = (xframe, common, security)
            try:
                response = await view(request, license_key=key)
            except Exception as exc:  # noqa: BLE001 - the JSON error shape, as HostileInputMiddleware gives
                # In a thread, as Django does: it logs the exception (handlers may do I/O).
                response = await sync_to_async(hostile.process_exception, thread_sensitive=False)(request, exc)
                if response is None:
                    raise
        for hook in outer:  # the innermost middleware first
            response = hook.process_response(request, response)
        response._resource_closers.append(request.close)
        response._handler_class = type(self.django)
        if response.status_code >= 400:  # Django's "Forbidden: /api/…" lines (4xx inline: a console write)
            log = (request.path, response, request)
            if response.status_code >= 500:
                await sync_to_async(_log, thread_sensitive=False)(*log)
            else:
                _log(*log)
        with contextlib.suppress(asyncio.CancelledError):  # the visitor left while the answer was sent
            if isinstance(getattr(response, "_iterator", None), AsyncRelay):
                await _relay_send(response, send)
            else:
                await self.django.send_response(response, send)
        return response


async def _relay_send(response: StreamingHttpResponse, send: Send) -> None:
    """`ASGIHandler.send_response` for a streamed n8n reply (widgets.chat_stream.AsyncRelay): the same start
    message, then each upstream read's lines as they come, straight from the relay instead of through the
    response's two wrapping async generators and `chunk_bytes`; the last lines (`end` or `error`) go with
    `more_body: False`, so the reply ends in that write rather than one more (issue 11 bench: a write on the
    visitor's socket was ~30 µs of the loop's time). Closing the relay stays the response's (`close()`)."""
    headers = [(bytes(k.encode("ascii")), bytes(v.encode("latin1"))) for k, v in response.items()]
    headers += [(b"Set-Cookie", c.output(header="").encode("ascii").strip()) for c in response.cookies.values()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    relay: AsyncRelay = response._iterator
    async for part in relay:
        last = relay.exhausted
        await send({"type": "http.response.body", "body": part, "more_body": not last})
        if last:
            return
    await send({"type": "http.response.body"})


# Django's own receivers of request_finished (django.db, django.core.cache, django.core.handlers.base), by the key
# `Signal.connect` files them under.
_DJANGO_FINISHERS = frozenset(
    (_make_id(receiver), _make_id(None)) for receiver in (close_old_connections, close_caches, reset_urlconf)
)


def _close_chat(response: HttpResponseBase) -> None:
    """`response.close()` for the n8n chat, without `request_finished` (the route sends no `request_started`
    either) while only Django's own receivers listen: every database use of the chat gives its connection back
    at the end of its own step (`widgets.aio.db_step`, `pg_async`), the caches' close is a no-op (Redis, local
    memory) and no urlconf was set, so they had nothing to do, and the signal was ~3% of a turn's CPU (issue 11
    bench, py-spy). Any other receiver gets the signal as on the full stack."""
    for closer in response._resource_closers:
        with contextlib.suppress(Exception):  # as HttpResponseBase.close
            closer()
    response._resource_closers.clear()
    response.closed = True
    if any(lookup_key not in _DJANGO_FINISHERS for lookup_key, *_ in request_finished.receivers):
        request_finished.send(sender=response._handler_class)


def _first_byte(send: Send, admission: Admission) -> Send:
    """`send` that ends the request's admission (chatkit.admission) with its first body message."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            admission.done()
        await send(message)

    return sending


def _log(path: str, response: HttpResponse, request: HttpRequest) -> None:
    log_response("%s: %s", response.reason_phrase, path, response=response, request=request)


def _route(scope: Scope) -> tuple[str, str] | None:
    """(which view, the license key) when this request may take the short route, else None."""
    if scope["method"] != "POST" or scope.get("root_path") or settings.FORCE_SCRIPT_NAME:
        return None
    if settings.DISALLOWED_USER_AGENTS or settings.PREPEND_WWW:
        return None
    match = CHAT_PATH.fullmatch(scope["path"])
    name, limit = "chat", settings.JSON_MAX_BODY_BYTES
    if match is None:
        match = CHATKIT_PATH.fullmatch(scope["path"])
        # The embedded page's calls only: the configurator's preview (session, CSRF) and share links go the
        # full way.
        if match is None or _query_names(scope) & {"preview", "share"}:
            return None
        name, limit = "chatkit", settings.CHATKIT_MAX_BODY_BYTES
    for header, value in scope["headers"]:
        if header == b"content-length":
            return (name, match[1]) if value.isdigit() and int(value) <= limit else None
    return None  # chunked: the full stack


def _query_names(scope: Scope) -> set[str]:
    query = scope.get("query_string", b"").decode("latin-1")
    return {name for name, _ in parse_qsl(query, keep_blank_values=True)}


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the full stack after the body was read here: the body once, then the visitor's."""
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
