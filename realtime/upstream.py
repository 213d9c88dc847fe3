"""The one client for the OpenAI Realtime WebSocket (STYLE rule 7).

`upstream_connect` opens `OPENAI_REALTIME_URL?model=…` with the tenant's key (else the platform
key), retrying only transient failures (connect errors, 5xx, 429 rate limits) a bounded number
of times; 401/403 and `insufficient_quota` fail at once with a reason code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from urllib.parse import urlencode

from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.protocol import State

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class UpstreamError(Exception):
    """`code` is one of realtime.events.END_MESSAGES' upstream_* reasons."""

    def __init__(self, code: str, detail: str = "", *, retryable: bool = False):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.retryable = retryable


def upstream_url(*, model: str) -> str:
    base = settings.OPENAI_REALTIME_URL
    return f"{base}{'&' if '?' in base else '?'}{urlencode({'model': model})}"


def _status_error(exc: InvalidStatus) -> UpstreamError:
    status = exc.response.status_code
    body = (exc.response.body or b"")[:2000].decode("utf-8", "replace")
    code = ""
    with contextlib.suppress(ValueError, RecursionError, AttributeError):
        code = (json.loads(body).get("error") or {}).get("code") or ""
    if status in (401, 403):
        return UpstreamError("upstream_auth_failed", f"HTTP {status}")
    if status == 429:
        if code == "insufficient_quota" or "insufficient_quota" in body:
            return UpstreamError("upstream_insufficient_quota", "HTTP 429")
        return UpstreamError("upstream_rate_limited", "HTTP 429", retryable=True)
    return UpstreamError("upstream_unavailable", f"HTTP {status}", retryable=status >= 500)


async def upstream_connect(
    *, model: str, api_key: str, retries: int = 2, open_timeout: float = 10.0, backoff: float = 0.25
) -> ClientConnection:
    if not api_key:
        raise UpstreamError("upstream_not_configured")
    url = upstream_url(model=model)
    attempt = 0
    while True:
        try:
            return await connect(
                url,
                additional_headers={"Authorization": f"Bearer {api_key}"},
                open_timeout=open_timeout,
                max_size=MAX_MESSAGE_BYTES,
                max_queue=64,
                compression=None,  # audio in base64 barely compresses; save the CPU
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
            )
        except InvalidStatus as exc:
            error = _status_error(exc)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            error = UpstreamError("upstream_unavailable", type(exc).__name__, retryable=True)
        if not error.retryable or attempt >= retries:
            raise error
        attempt += 1
        logger.info("realtime upstream retry %s after %s", attempt, error)
        await asyncio.sleep(backoff * 2 ** (attempt - 1))


def upstream_send_now(conn: ClientConnection, text: str) -> bool:
    """Write one text message to the socket now, without a coroutine, when the connection can take it without
    waiting: open, no fragmented message being sent, and the transport not paused by flow control. Returns False
    otherwise, and the caller sends it with `await conn.send(text)`, which waits (or raises ConnectionClosed).

    This is `ClientConnection.send` minus its async context manager and drain (both no-ops for an open, unpaused
    connection), for the relay's 50 audio frames a second per call (issue 14.4). A write that fails aborts the
    transport: the reader then sees the connection closed and the call ends as it would after a failed `send`."""
    if (
        conn.protocol.state is not State.OPEN
        or conn.paused
        or conn.fragmented_send_waiter is not None
        or conn.transport.is_closing()
    ):
        return False
    conn.protocol.send_text(text.encode())
    try:
        conn.send_data()
    except Exception:  # the socket broke under us: the same end as `send`'s (abort, then ConnectionClosed)
        logger.info("realtime upstream write failed; aborting", exc_info=True)
        conn.transport.abort()
    return True
