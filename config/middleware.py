"""Request guards that hold for every endpoint, and the cleanser of error reports.

- `HostileInputMiddleware` refuses a NUL character in the path, query string, a header or an HTML
  form field with 400 (PostgreSQL refuses NUL in text, so any lookup or write of such a value
  would fail with a 500), and makes every JSON
  endpoint answer the error shape — `{"error": {"code", "message"}}` — for an exception its view
  raises, DEBUG or not: the technical 500 page (frames, locals, request) never reaches a caller of a
  public or JSON endpoint. The exception is still logged through `django.request`, as Django does.
- `SafeExceptionReporterFilter` is the settings' cleanser (DEFAULT_EXCEPTION_REPORTER_FILTER) for
  the technical 500 page and error e-mails: on top of Django's secret-looking names it hides tenant
  config (webhook URLs, instructions, business facts, secrets, request bodies) in frame locals, at
  any depth of a dict.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as messages_middleware
from django.contrib.sessions import middleware as sessions_middleware
from django.core.exceptions import BadRequest, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.handlers import asgi
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware import clickjacking, common, security
from django.utils.module_loading import import_string
from django.views.debug import SafeExceptionReporterFilter as DjangoFilter

from config import hosts
from config.errors import is_service_outage, service_unavailable
from licenses.api import error_body

logger = logging.getLogger("django.request")

# Routes whose callers read JSON: the public API, the REST API and the configurator's JSON calls.
JSON_PATH = re.compile(r"^/(api/|app/p/[^/]+/chat/$|app/widgets/[^/]+/(test-connection|preview-chat)/$)")
JS_PATH = re.compile(r"\.js$")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def wants_json(request: HttpRequest) -> bool:
    path = request.path_info
    if JS_PATH.search(path):
        return False
    return bool(JSON_PATH.match(path)) or request.content_type == "application/json"


# The headers an ASGI request keeps out of META's HTTP_ names (Django's ASGIRequest), so not checked here.
_NOT_HTTP_META = (b"content-type", b"content-length")


def _has_nul(request: HttpRequest) -> bool:
    query = request.META.get("QUERY_STRING", "")
    # A decoded query value holds a NUL only from "%00" or a NUL in the raw text (QueryDict decodes nothing
    # else into one), so the raw query string answers for request.GET without parsing it.
    if "\x00" in request.path_info or "%00" in query or "\x00" in query:
        return True
    scope = getattr(request, "scope", None)
    if scope is not None:  # under ASGI: the raw header values (META's HTTP_ values are their latin-1 text)
        if any(b"\x00" in value for name, value in scope["headers"] if name.lower() not in _NOT_HTTP_META):
            return True
    elif any(isinstance(v, str) and "\x00" in v for k, v in request.META.items() if k.startswith("HTTP_")):
        return True
    # HTML forms (/app/, /admin/): JSON bodies have their own rule in config.api; DRF reads its own stream.
    if request.method == "POST" and request.content_type in FORM_TYPES and not wants_json(request):
        return any("\x00" in v for values in request.POST.lists() for v in values[1])
    return False


def _json_error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


class HostileInputMiddleware:
    # Async-capable: a sync-only middleware would run every request, the async chat view included,
    # in a thread held for the whole upstream wait (issue 11.1).
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        return self._refusal(request) or self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return self._refusal(request) or await self.get_response(request)

    def _refusal(self, request: HttpRequest) -> HttpResponse | None:
        if _has_nul(request):
            message = "The address or a header contains a NUL character."
            if wants_json(request):
                return _json_error("invalid_text", message, 400)
            if JS_PATH.search(request.path_info):  # the loader: the page's console says why
                return HttpResponse(
                    f"console.error({json.dumps('Switchboard: ' + message)});",
                    status=400,
                    content_type="application/javascript; charset=utf-8",
                )
            return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not wants_json(request):
            return None
        if isinstance(exception, Http404):
            return _json_error("not_found", "Not found.", 404)
        if isinstance(exception, PermissionDenied):
            return _json_error("permission_denied", "You do not have permission to do this.", 403)
        if isinstance(exception, RequestDataTooBig):
            return _json_error("payload_too_large", "The request body is too large.", 413)
        if isinstance(exception, SuspiciousOperation | BadRequest):
            logger.warning("Bad request: %s", request.path, extra={"status_code": 400, "request": request})
            return _json_error("bad_request", "The request is malformed.", 400)
        if is_service_outage(exception):
            # The database or Redis is briefly away (pool exhausted, connection lost): a retryable 503.
            logger.warning(
                "Service unavailable: %s (%s)",
                request.path,
                exception.__class__.__name__,
                extra={"status_code": 503, "request": request},
            )
            return service_unavailable()
        logger.error(
            "Internal Server Error: %s",
            request.path,
            exc_info=exception,
            extra={"status_code": 500, "request": request},
        )
        return _json_error("server_error", "Something went wrong on our side. Please try again.", 500)


class SafeExceptionReporterFilter(DjangoFilter):
    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL|WEBHOOK|INSTRUCTIONS|FACTS|CONFIG|BODY"
        "|PAYLOAD|TARGET|SESSION|DSN",
        flags=re.IGNORECASE,
    )

    def get_traceback_frame_variables(self, request: HttpRequest, tb_frame: Any) -> list[tuple[str, Any]]:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, self.cleanse_setting(name, value)) for name, value in variables]


# --- Django's own middleware without a thread hop per hook under ASGI --------------------------------
# `MiddlewareMixin.__acall__` runs every `process_request`/`process_response` in a thread
# (`sync_to_async(thread_sensitive=True)`): seven of Django's middlewares made ~13 thread hops per
# request, and the first one starts the request's own thread (issue 11 bench: a sixth of the chat
# path's CPU). These hooks do no I/O (the session and user are lazy; CSRF reads a cookie; security
# and frame options only set headers), so under ASGI they run inline. The hooks that can do I/O —
# saving a modified session, storing flash messages — still go to the thread when they would.
#
# Settings keep Django's own dotted paths (so Django's deploy checks, which look for those exact
# paths, still run); `ASGIHandler` (config/asgi.py) swaps in these subclasses when it builds its async
# middleware chain. Under WSGI (the test client) nothing changes.


class InlineHooksMixin:
    """For a `MiddlewareMixin` whose hooks never touch the database or the network."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        view_hook = getattr(self, "process_view", None)
        if self.async_mode and view_hook is not None and not iscoroutinefunction(view_hook):

            async def process_view(request: HttpRequest, callback: Any, args: Any, kwargs: Any) -> Any:
                return view_hook(request, callback, args, kwargs)

            self.process_view = process_view

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = await self._respond(request, response)
        return response

    async def _respond(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return self.process_response(request, response)


class InlineSessionMiddleware(InlineHooksMixin, sessions_middleware.SessionMiddleware):
    """Inline unless the session must be saved (a database write): then in the request's thread."""

    async def _respond(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST):
            return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
        return self.process_response(request, response)


class InlineSecurityMiddleware(InlineHooksMixin, security.SecurityMiddleware):
    pass


class InlineCommonMiddleware(InlineHooksMixin, common.CommonMiddleware):
    pass


class InlineCsrfViewMiddleware(InlineHooksMixin, hosts.CsrfViewMiddleware):
    pass


class InlineAuthenticationMiddleware(InlineHooksMixin, auth_middleware.AuthenticationMiddleware):
    pass


@functools.cache
def _message_storage(path: str) -> type:
    return import_string(path)


class InlineMessageMiddleware(InlineHooksMixin, messages_middleware.MessageMiddleware):
    """Inline unless messages were added or read: storing them may load the session (a database read).
    The storage class is imported once, not on every request as Django's `default_storage` does."""

    def process_request(self, request: HttpRequest) -> None:
        request._messages = _message_storage(settings.MESSAGE_STORAGE)(request)

    async def _respond(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        storage = getattr(request, "_messages", None)
        if storage is not None and (storage.used or storage.added_new):
            return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
        return self.process_response(request, response)


class InlineXFrameOptionsMiddleware(InlineHooksMixin, clickjacking.XFrameOptionsMiddleware):
    pass


# Django's dotted path → the class the ASGI handler uses instead.
INLINE_MIDDLEWARE: dict[str, type] = {
    "django.middleware.security.SecurityMiddleware": InlineSecurityMiddleware,
    "django.contrib.sessions.middleware.SessionMiddleware": InlineSessionMiddleware,
    "django.middleware.common.CommonMiddleware": InlineCommonMiddleware,
    "config.hosts.CsrfViewMiddleware": InlineCsrfViewMiddleware,
    "django.contrib.auth.middleware.AuthenticationMiddleware": InlineAuthenticationMiddleware,
    "django.contrib.messages.middleware.MessageMiddleware": InlineMessageMiddleware,
    "django.middleware.clickjacking.XFrameOptionsMiddleware": InlineXFrameOptionsMiddleware,
}


class BodyTooLarge(Exception):
    """The request body passed REQUEST_MAX_BODY_BYTES while it was read."""


def _declared_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class ASGIHandler(asgi.ASGIHandler):
    """Django's ASGI handler with `INLINE_MIDDLEWARE` in its middleware chain, and a cap on the request
    body: Django reads the whole body (to a temporary file) before any middleware or view can refuse it,
    so an anonymous multi-gigabyte POST would fill the disk. Over `REQUEST_MAX_BODY_BYTES` — declared in
    Content-Length, or counted while a chunked body arrives — the answer is 413 at once (the JSON error
    shape under /api/, plain text elsewhere) and nothing more is read."""

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        declared = _declared_length(scope)
        if declared is not None and declared > settings.REQUEST_MAX_BODY_BYTES:
            return await self._too_large(scope, send)
        try:
            return await super().handle(scope, receive, send)
        except BodyTooLarge:
            return await self._too_large(scope, send)

    async def read_body(self, receive: Any) -> Any:
        limit, seen = settings.REQUEST_MAX_BODY_BYTES, 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
            return message

        return await super().read_body(counted)

    async def _too_large(self, scope: dict[str, Any], send: Any) -> None:
        message = "The request body is too large."
        if scope.get("path", "").startswith("/api/"):
            body = json.dumps(error_body("payload_too_large", message)).encode()
            content_type = b"application/json"
        else:
            body, content_type = message.encode(), b"text/plain; charset=utf-8"
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    def load_middleware(self, is_async: bool = False) -> None:
        configured = settings.MIDDLEWARE
        settings.MIDDLEWARE = [
            f"{__name__}.{INLINE_MIDDLEWARE[path].__name__}" if is_async and path in INLINE_MIDDLEWARE else path
            for path in configured
        ]
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = configured
