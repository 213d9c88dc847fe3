"""DRF glue for the API error shape and the one JSON body parser, both in `licenses/api.py` (the ground
floor every app imports): the exception handler and the parser class that settings.REST_FRAMEWORK names."""

from __future__ import annotations

from typing import IO, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, parsers
from rest_framework.response import Response

from licenses.api import ApiError, error_body, json_loads, too_large_error


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            path = f"{prefix}.{key}" if prefix and key != "non_field_errors" else (prefix or str(key))
            for p, msgs in _flatten(value, path).items():
                out.setdefault(p, []).extend(msgs)
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            out[prefix or "non_field_errors"] = [str(item) for item in detail]
        else:
            for index, item in enumerate(detail):
                for p, msgs in _flatten(item, f"{prefix}[{index}]").items():
                    out.setdefault(p, []).extend(msgs)
    else:
        out[prefix or "non_field_errors"] = [str(detail)]
    return out


_CODES = {
    exceptions.NotAuthenticated: ("not_authenticated", "Sign in to use this endpoint."),
    exceptions.AuthenticationFailed: ("authentication_failed", None),
    exceptions.PermissionDenied: ("permission_denied", None),
    exceptions.NotFound: ("not_found", "Not found."),
    exceptions.MethodNotAllowed: ("method_not_allowed", None),
    exceptions.ParseError: ("parse_error", None),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", None),
    exceptions.Throttled: ("rate_limited", None),
}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    # Imported here: rest_framework.views reads DEFAULT_PARSER_CLASSES (our JSONParser, below) at import.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, ApiError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        first = next(iter(fields.items()), ("", ["Invalid input."]))
        message = f"{first[0]}: {first[1][0]}" if first[0] and first[0] != "non_field_errors" else first[1][0]
        response.data = error_body("invalid", message, fields)
        return response
    code, message = _CODES.get(type(exc), (None, None))
    if code is None:
        code = getattr(exc, "default_code", "error")
    response.data = error_body(code, message or str(getattr(exc, "detail", exc)))
    return response


class JSONParser(parsers.BaseParser):
    """DRF's parser, replaced: the same rule as `json_object` (see the module docstring)."""

    media_type = "application/json"

    def parse(self, stream: IO[bytes] | None, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        limit = settings.JSON_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            length = 0
        if length > limit:
            raise too_large_error(limit)
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise too_large_error(limit)
        return json_loads(raw)
