"""The ground floor of every JSON endpoint (the lowest app, so every app may import it): the API error
shape shared by every JSON endpoint: {"error": {"code", "message"}}, and the ONE JSON
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
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers, status


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


# --- the one JSON body parser ---------------------------------------------------------------------

JSON_MAX_DEPTH = 32
INT_MAX = 2**63 - 1
JSON_CONTENT_TYPES = ("application/json", "text/plain")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def too_large_error(limit: int) -> ApiError:
    """413 `payload_too_large` (the parsers' size rule)."""
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


# What a one-line display name an agency sets (a brand name, a widget's title) may not hold: control
# characters and line breaks, bidi controls (U+202A–202E, U+2066–2069, LRM/RLM/ALM: they reorder what
# follows, so a name can spoof the text after it), and invisible zero-width characters (ZWSP, word joiner,
# BOM). ZWJ/ZWNJ (U+200D/U+200C) stay allowed: emoji sequences and several scripts need them.
DISPLAY_FORBIDDEN = "\x00-\x1f\x7f\x85\u2028\u2029\u061c\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff"
DISPLAY_FORBIDDEN_RE = re.compile(f"[{DISPLAY_FORBIDDEN}]")
DISPLAY_TEXT_MESSAGE = "Use one line of plain text (no line breaks, control or bidirectional-override characters)."


def display_text_problem(text: str) -> str | None:
    """The field error for a one-line display name holding a forbidden character, or None."""
    return DISPLAY_TEXT_MESSAGE if DISPLAY_FORBIDDEN_RE.search(text) else None


def text_problem(text: str) -> str | None:
    """Why this text cannot be stored or sent on (NUL, lone surrogate), or None. For form fields too."""
    match = _BAD_TEXT.search(text)
    if match is None:
        return None
    return "a NUL character" if match.group() == "\x00" else "an unpaired surrogate (invalid Unicode)"


def storable(value: Any) -> Any:
    """`value` (text, or parsed JSON) with every NUL and lone surrogate replaced by U+FFFD, for text that comes from
    a service we call (an n8n answer, a CRM's error page) and must be stored (PostgreSQL refuses NUL in text and
    JSONB) and sent on as UTF-8 (which has no lone surrogates). What a visitor or member sends with them is refused
    instead (`text_problem`)."""
    if isinstance(value, str):
        return _BAD_TEXT.sub("\ufffd", value)
    if isinstance(value, list):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    return value


EMAIL_MAX = 254  # an EmailField's column: Django's validator alone lets 320 characters through


def email_valid(value: str) -> bool:
    """An e-mail address that fits the columns that store one (PostgreSQL refuses a longer one: a 500)."""
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    if len(value) > EMAIL_MAX:
        return False
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


def one_line(value: Any) -> str:
    """`value` as text on one line (every run of whitespace, line breaks included, becomes one space): what
    a visitor's page claims goes into the agents' instructions as `- Label: value` lines, and a line break
    in it must not start a line of its own (a forged "verified" block, an unmarked attribute)."""
    return " ".join(str(value).split())


def _check_text(text: str) -> None:
    problem = text_problem(text)
    if problem is not None:
        raise ApiError("invalid_text", f"Text in the request body contains {problem}.")


def json_compact(value: Any) -> bytes:
    """`value` as compact JSON bytes: orjson (several times faster than json.dumps; every streamed chat line,
    chat reply and voice event goes through here), or the standard library for text orjson refuses (a lone
    surrogate a browser typed), escaped as before."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


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
        raise too_large_error(limit)
    if not _content_type_ok(request.META.get("CONTENT_TYPE", "")):
        raise ApiError("unsupported_media_type", "Send the body as application/json.", status_code=415)
    try:
        body = request.body
    except RequestDataTooBig:
        raise too_large_error(limit)
    if len(body) > limit:
        raise too_large_error(limit)
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


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.JSONField):
    """A JSON object (never null, a list or a scalar), documented as such in the OpenAPI schema."""

    default_error_messages = {"not_object": "Must be an object."}

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_object")
        return value


class StrictCharField(serializers.CharField):
    """A string and only a string: DRF's CharField turns 42, 4.2e16 or true into text, which the schema
    (`type: string`) says is invalid (the API fuzzer's negative cases caught it). `max_length` holds for the
    text as sent, as the schema's `maxLength` says: DRF checks it after trimming whitespace, so 201
    characters with a space at either end were accepted as 200."""

    default_error_messages = {"not_string": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_string")
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


INT32_MAX = 2**31 - 1
