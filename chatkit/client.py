"""The one client for OpenAI ChatKit sessions (hosted Agent Builder workflows; legacy until 2026-11-30).

`POST {OPENAI_BASE_URL}/chatkit/sessions` with `OpenAI-Beta: chatkit_beta=v1`, the same request the
openai SDK's `client.beta.chatkit.sessions.create(...)` sends. Plain httpx on one pooled client: no
SDK retries hidden inside a visitor's request, and every failure becomes a `ChatKitError` with a
stable code. Neither the API key nor the workflow id ever appears in an error message.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

BETA_HEADER = "chatkit_beta=v1"


class ChatKitError(Exception):
    """An upstream or configuration failure, already phrased for the browser."""

    def __init__(self, code: str, message: str, status_code: int):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status_code = status_code


ERRORS: dict[str, tuple[str, int]] = {
    "not_configured": ("ChatKit is not set up for this widget yet: add an OpenAI API key and a workflow id.", 503),
    "invalid_api_key": ("OpenAI refused the widget's API key. Check the key in the widget's connection settings.",
                        502),
    "workflow_not_found": (
        "OpenAI could not find the workflow for this API key. The key may belong to another OpenAI project "
        "than the workflow: create the key in the same project as the Agent Builder workflow.",
        502,
    ),
    "upstream_rate_limited": ("OpenAI is rate limiting this widget. Try again in a minute.", 429),
    "upstream_error": ("OpenAI could not create a ChatKit session. Try again shortly.", 502),
    "upstream_timeout": ("OpenAI did not answer in time. Try again shortly.", 504),
}


def chatkit_error(code: str) -> ChatKitError:
    message, status = ERRORS[code]
    return ChatKitError(code, message, status)


@dataclass(frozen=True)
class ChatKitSession:
    client_secret: str
    expires_at: int
    session_id: str


_lock = threading.Lock()
_client: httpx.Client | None = None


def _http() -> httpx.Client:
    """One pooled client per process (keep-alive to the upstream saves a TLS handshake per session)."""
    global _client
    with _lock:
        if _client is None:
            _client = httpx.Client(limits=httpx.Limits(max_connections=50, max_keepalive_connections=20))
        return _client


def session_request_body(
    *,
    workflow_id: str,
    workflow_version: str,
    user: str,
    file_upload: bool,
    history: bool,
    expires_seconds: int,
    max_requests_per_minute: int,
) -> dict[str, Any]:
    workflow: dict[str, Any] = {"id": workflow_id}
    if workflow_version:
        workflow["version"] = workflow_version
    return {
        "workflow": workflow,
        "user": user,
        "chatkit_configuration": {"file_upload": {"enabled": file_upload}, "history": {"enabled": history}},
        "expires_after": {"anchor": "created_at", "seconds": expires_seconds},
        "rate_limits": {"max_requests_per_1_minute": max_requests_per_minute},
    }


def session_create(*, api_key: str, body: dict[str, Any]) -> ChatKitSession:
    """Create a ChatKit session upstream. Raises ChatKitError."""
    if not api_key or not body.get("workflow", {}).get("id"):
        raise chatkit_error("not_configured")
    url = f"{settings.OPENAI_BASE_URL.rstrip('/')}/chatkit/sessions"
    timeout = httpx.Timeout(settings.CHATKIT_TIMEOUT, connect=settings.CHATKIT_CONNECT_TIMEOUT)
    try:
        response = _http().post(
            url,
            json=body,
            headers={"Authorization": f"Bearer {api_key}", "OpenAI-Beta": BETA_HEADER},
            timeout=timeout,
        )
    except httpx.TimeoutException:
        logger.warning("chatkit session: upstream timeout")
        raise chatkit_error("upstream_timeout")
    except httpx.HTTPError as exc:
        logger.warning("chatkit session: upstream unreachable (%s)", type(exc).__name__)
        raise chatkit_error("upstream_error")
    if response.status_code != 200:
        # Log the status and OpenAI's error code only: its message may quote the key or workflow id.
        logger.warning("chatkit session: upstream %s (%s)", response.status_code, _upstream_code(response))
        if response.status_code == 401:
            raise chatkit_error("invalid_api_key")
        if response.status_code == 404:
            raise chatkit_error("workflow_not_found")
        if response.status_code == 429:
            raise chatkit_error("upstream_rate_limited")
        raise chatkit_error("upstream_error")
    try:
        data = response.json()
        return ChatKitSession(
            client_secret=str(data["client_secret"]),
            expires_at=int(data["expires_at"]),
            session_id=str(data.get("id") or ""),
        )
    except (ValueError, KeyError, TypeError):
        logger.warning("chatkit session: upstream answered 200 without client_secret/expires_at")
        raise chatkit_error("upstream_error")


def _upstream_code(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or error.get("type") or "-")[:60]
    except (ValueError, AttributeError):
        return "-"
