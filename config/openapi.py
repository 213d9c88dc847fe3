"""OpenAPI fixes applied to the generated schema (SPECTACULAR_SETTINGS POSTPROCESSING_HOOKS).

drf-spectacular documents only the success answer of each operation; every operation here can also
answer the error shape (config.api), and clients (and the fuzzer, config/tests/test_api_fuzz.py)
rely on the documented statuses. This hook adds the `Error` component and, to every operation, the
error statuses it can answer: 400 invalid input, 401 no or bad credentials, 403 role, 404 not found
(also another tenant's object), 429 throttled; operations with a body add 413 (body over
JSON_MAX_BODY_BYTES) and 415 (not JSON); writes of a draft add 409 (stale revision).
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "A stable snake_case reason code."},
                "message": {"type": "string", "description": "A sentence for people."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    "description": "Messages by field path (config.voice.speed) for invalid input.",
                },
                "retry_after": {"type": "integer"},
            },
        }
    },
}

COMMON = {
    "400": "Invalid input (the body, a field or a parameter); `fields` names them.",
    "401": "Not signed in, or the token is wrong.",
    "403": "Signed in, but the role may not do this.",
    "404": "Not found (or it belongs to another agency).",
    "429": "Too many attempts (token sign-in throttled); see Retry-After.",
}
WITH_BODY = {
    "413": "The body is larger than JSON_MAX_BODY_BYTES.",
    "415": "The body is not JSON.",
}
CONFLICT = {"409": "The draft changed since `revision` (someone else saved or published)."}
METHODS = ("get", "put", "post", "patch", "delete")


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            statuses = dict(COMMON)
            if method in ("put", "post", "patch"):
                statuses.update(WITH_BODY)
            if method in ("put", "patch") or path.endswith(("/publish/", "/rollback/")):
                statuses.update(CONFLICT)
            responses = operation.setdefault("responses", {})
            for status, description in statuses.items():
                responses.setdefault(status, _error(description))
    return result
