"""The guard of every public endpoint a customer's page calls: license check + Origin, fail closed.

`public_endpoint` wraps a Django view taking `(request, license, **kwargs)`, sync or async (an async
view gets an async wrapper whose checks run in one short DB step):
- answers CORS preflight (OPTIONS) for allowed origins only;
- runs the license check with the request's Origin (missing/`null`/foreign Origin → 403 with the
  reason code), optionally requiring quota (→ 429 `quota_exceeded`);
- adds `Access-Control-Allow-Origin` (the exact origin, never `*`) and `Vary: Origin` to answers;
  a refusal is readable by the refused page too (only its reason code), so the widget can say why.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from licenses.api import error_response
from licenses.domains import origin_allowed, origin_host_port
from licenses.models import License
from licenses.selectors import LicenseCheck, license_check, license_get_public
from widgets.aio import db_step

ALLOW_HEADERS = "Content-Type, X-Switchboard-Visitor, X-Switchboard-Identity"


def request_origin(request: HttpRequest) -> str | None:
    return request.META.get("HTTP_ORIGIN")  # request.headers would build a dict of every header per request


def cors_headers(
    response: HttpResponse, *, request: HttpRequest, license: License | None, methods: str
) -> HttpResponse:
    origin = request_origin(request)
    if license is not None and origin and origin_allowed(license.allowed_domains, origin):
        response["Access-Control-Allow-Origin"] = origin
        _preflight_headers(response, methods=methods)
    response["Vary"] = "Origin"
    return response


def refusal_cors(response: HttpResponse, *, request: HttpRequest) -> HttpResponse:
    """Let the refused page read *why* (the reason code and nothing else), so the widget can log it.

    The body holds no data of the license; the loader already tells any page the same."""
    origin = request_origin(request)
    if origin_host_port(origin) is not None:
        response["Access-Control-Allow-Origin"] = origin
    response["Vary"] = "Origin"
    return response


def check_error(check: LicenseCheck) -> HttpResponse:
    return error_response(check.reason, check.message, check.http_status)


def public_check(request: HttpRequest, *, key: str, quota: str | None = None) -> LicenseCheck:
    return license_check(license=license_get_public(key=key), origin=request_origin(request), quota=quota)


def public_endpoint(
    *,
    methods: tuple[str, ...],
    quota: str | None = None,
    key_from: str = "license_key",
    preflight_any_origin: bool = False,
    license_cached: Callable[[str], License | None] | None = None,
) -> Callable:
    """Decorate `view(request, license, **kwargs)`.

    `key_from` names the URL kwarg with the license key: the check runs here, before the view. With
    key_from="" the view finds the key itself (body or `?license=`), gets `license=None`, must call
    `public_check` (or its own check), and sets `request.public_license` to the license it found so
    its answer carries CORS for that license's origins. A preflight of such an endpoint uses
    `?license=` when present; `preflight_any_origin` answers it for any well-formed Origin instead
    (for a key that only the body names: the request itself then decides).

    `license_cached(key)` (async views only) may return the license from a per-process cache: the
    guard then runs without a database step. The view must then prove the copy current before it
    serves anything (the public chat does, in `widgets.chat.chat_prepare`)."""
    allowed = ", ".join((*methods, "OPTIONS"))

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        def guard(
            request: HttpRequest, kwargs: dict[str, Any], cached: License | None = None
        ) -> tuple[License | None, HttpResponse | None]:
            """Everything before the view (one short DB step): the license, preflight, method, check."""
            key = kwargs.pop(key_from, "") if key_from else request.GET.get("license", "")
            license = cached or (license_get_public(key=key) if key else None)
            if request.method == "OPTIONS":
                response = HttpResponse(status=204)
                if preflight_any_origin:
                    return license, refusal_cors(_preflight_headers(response, methods=allowed), request=request)
                return license, cors_headers(response, request=request, license=license, methods=allowed)
            if request.method not in methods:
                response = error_response("method_not_allowed", f"Use {' or '.join(methods)}.", 405)
                response["Allow"] = allowed
                return license, cors_headers(response, request=request, license=license, methods=allowed)
            if key_from:
                check = license_check(license=license, origin=request_origin(request), quota=quota)
                if not check.ok:
                    return license, refusal_cors(check_error(check), request=request)
            return license, None

        def finish(request: HttpRequest, license: License | None, response: HttpResponse) -> HttpResponse:
            cors_license = license if key_from else getattr(request, "public_license", None)
            return cors_headers(response, request=request, license=cors_license, methods=allowed)

        if iscoroutinefunction(view):
            # An async view (the n8n chat) stays async end to end: the guard is one short DB step
            # that hands its connection back before the view waits on anything upstream.
            @csrf_exempt
            @wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                cached = None
                if license_cached is not None and key_from and quota is None and request.method in methods:
                    cached = license_cached(kwargs.get(key_from, ""))
                if cached is not None:
                    license, early = guard(request, kwargs, cached)  # no database work on this path
                else:
                    license, early = await db_step(guard, request, kwargs)
                if early is not None:
                    return early
                return finish(request, license, await view(request, license, *args, **kwargs))

            return async_wrapper

        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            license, early = guard(request, kwargs)
            if early is not None:
                return early
            return finish(request, license, view(request, license, *args, **kwargs))

        return wrapper

    return decorator


def _preflight_headers(response: HttpResponse, *, methods: str) -> HttpResponse:
    response["Access-Control-Allow-Methods"] = methods
    response["Access-Control-Allow-Headers"] = ALLOW_HEADERS
    response["Access-Control-Max-Age"] = "600"
    return response
