"""HTTP client for OpenAI's Realtime REST side: ephemeral client secrets for browser WebRTC calls."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from django.conf import settings

from licenses.api import ApiError
from licenses.outbound import cookieless_jar


class ClientSecretError(ApiError):
    """The ephemeral key could not be minted, phrased for the browser."""

    def __init__(self, code: str, message: str, status_code: int = 502):
        super().__init__(code, message, status_code=status_code)


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _http() -> httpx.Client:
    """This process's one client for OpenAI's REST side: connections kept alive, and one TLS context —
    building an httpx.Client costs ~15–25 ms of CPU (its SSL context), more than the rest of a client-secret
    request (bench/voice_endpoints.py)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                limits = httpx.Limits(max_connections=20, max_keepalive_connections=10)
                _client = httpx.Client(limits=limits, cookies=cookieless_jar())  # shared by every tenant
    return _client


def client_secret_create(*, api_key: str, session: dict[str, Any], seconds: int = 60) -> dict[str, Any]:
    """POST {OPENAI_BASE_URL}/realtime/client_secrets → {"value", "expires_at"} only (never the key)."""
    if not api_key:
        raise ClientSecretError("upstream_not_configured", "Voice isn't set up for this site yet.", 503)
    try:
        response = _http().post(
            f"{settings.OPENAI_BASE_URL}/realtime/client_secrets",
            json={"expires_after": {"anchor": "created_at", "seconds": seconds}, "session": session},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(15.0, connect=5.0),
        )
    except httpx.TransportError:
        raise ClientSecretError("upstream_unavailable", "The voice service can't be reached right now.", 502)
    if response.status_code in (401, 403):
        raise ClientSecretError("upstream_auth_failed", "The voice service isn't set up correctly for this site.", 502)
    if response.status_code == 429:
        raise ClientSecretError("upstream_rate_limited", "The voice service is busy right now.", 503)
    if response.status_code >= 300:
        raise ClientSecretError("upstream_error", "The voice service refused the session.", 502)
    try:
        data = response.json()
        return {"value": str(data["value"]), "expires_at": int(data["expires_at"])}
    except (ValueError, KeyError, TypeError):
        raise ClientSecretError("upstream_error", "The voice service sent an unexpected answer.", 502)
