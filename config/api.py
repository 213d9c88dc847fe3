"""API error shape shared by every JSON endpoint: {"error": {"code", "message"}}, and the ONE JSON
body parser every endpoint uses (plain Django views through `json_object`, DRF through `JSONParser`).

The parser's rule, applied before any view sees the data:
- a body over `settings.JSON_MAX_BODY_BYTES` → 413 `payload_too_large`;
- a Content-Type other than JSON or text/plain (the widget may send text/plain to skip a CORS
  preflight) → 415 `unsupported_media_type`;
- not UTF-8, not JSON, nested deeper than `JSON_MAX_DEPTH`, NaN/Infinity, a number outside what a
  64-bit column or a float holds → 400 `invalid_json`;
- any text (keys included) holding a NUL character or a lone UTF-16 surrogate → 400 `invalid_text`
  (PostgreSQL refuses NUL in text and JSONB; a lone surrogate cannot be encoded to send upstream).
"""

from __future__ import annotations

import json
import math
import re
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.response import Response


class ApiError(exceptions.APIException):
    """An error with a stable machine code, raised by services and views alike."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, message: str, *, status_code: int = 400, fields: dict | None = None):
        super().__init__(detail=message, code=code)
        self.code = code
        self.message = message
        self.status_code = status_code
        self.fields = fields or {}


def error_body(code: str, message: str, fields: dict | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def error_response(code: str, message: str, status_code: int, fields: dict | None = None) -> JsonResponse:
    """For plain Django views (public endpoints) that do not go through DRF."""
    return JsonResponse(error_body(code, message, fields), status=status_code)


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


# --- the one JSON body parser ---------------------------------------------------------------------

JSON_MAX_DEPTH = 32
INT_MAX = 2**63 - 1
JSON_CONTENT_TYPES = ("application/json", "text/plain")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def _too_large(limit: int) -> ApiError:
    return ApiError("payload_too_large", f"The request body is larger than {limit // 1024} KB.", status_code=413)


def _invalid_json(message: str = "The request body is not valid JSON.") -> ApiError:
    return ApiError("invalid_json", message)


def _parse_constant(name: str) -> Any:
    raise _invalid_json(f"{name} is not allowed in JSON.")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _invalid_json("A number in the request body is too large.")
    return value


def _parse_int(text: str) -> int:
    if len(text) > 20:
        raise _invalid_json("A number in the request body is too large.")
    value = int(text)
    if not -INT_MAX - 1 <= value <= INT_MAX:
        raise _invalid_json("A number in the request body is too large.")
    return value


def text_problem(text: str) -> str | None:
    """Why this text cannot be stored or sent on (NUL, lone surrogate), or None. For form fields too."""
    match = _BAD_TEXT.search(text)
    if match is None:
        return None
    return "a NUL character" if match.group() == "\x00" else "an unpaired surrogate (invalid Unicode)"


def _check_text(text: str) -> None:
    problem = text_problem(text)
    if problem is not None:
        raise ApiError("invalid_text", f"Text in the request body contains {problem}.")


def json_check(value: Any) -> Any:
    """Walk parsed JSON (iteratively: no recursion to exhaust): depth and text rules. Returns `value`."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth > JSON_MAX_DEPTH:
                raise _invalid_json(f"The request body is nested deeper than {JSON_MAX_DEPTH} levels.")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
    return value


def json_loads(raw: bytes | str) -> Any:
    """Parse a request body under the rule above; raises ApiError (400)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid_json("The request body is not UTF-8.")
    try:
        value = json.loads(raw, parse_constant=_parse_constant, parse_float=_parse_float, parse_int=_parse_int)
    except RecursionError:
        raise _invalid_json(f"The request body is nested deeper than {JSON_MAX_DEPTH} levels.")
    except ValueError:  # JSONDecodeError, and int() past Python's digit limit
        raise _invalid_json()
    return json_check(value)


def _content_type_ok(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media in JSON_CONTENT_TYPES or (media.startswith("application/") and media.endswith("+json"))


def json_body_bytes(request: HttpRequest, *, max_bytes: int | None = None) -> bytes:
    """The raw body of a JSON request, after the size and Content-Type rules (raises ApiError)."""
    limit = max_bytes or settings.JSON_MAX_BODY_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise _too_large(limit)
    if not _content_type_ok(request.META.get("CONTENT_TYPE", "")):
        raise ApiError("unsupported_media_type", "Send the body as application/json.", status_code=415)
    try:
        body = request.body
    except RequestDataTooBig:
        raise _too_large(limit)
    if len(body) > limit:
        raise _too_large(limit)
    return body


def json_object(
    request: HttpRequest, *, empty: dict[str, Any] | None = None, max_bytes: int | None = None
) -> dict[str, Any]:
    """The request's JSON object body for a plain Django view (raises ApiError 400/413/415).

    `empty` is returned for an empty body when given (else an empty body is invalid)."""
    body = json_body_bytes(request, max_bytes=max_bytes)
    if not body.strip() and empty is not None:
        return empty
    data = json_loads(body)
    if not isinstance(data, dict):
        raise _invalid_json("The request body must be a JSON object.")
    return data


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
            raise _too_large(limit)
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise _too_large(limit)
        return json_loads(raw)


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.JSONField):
    """A JSON object (never null, a list or a scalar), documented as such in the OpenAPI schema."""

    default_error_messages = {"not_object": "Must be an object."}

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_object")
        return value


INT32_MAX = 2**31 - 1
