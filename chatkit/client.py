"""The one client for OpenAI on the ChatKit path: the Responses API the Agents SDK calls for server mode.

`model_provider(api_key=...)` gives a per-request `OpenAIProvider` around an `AsyncOpenAI` with the
tenant's (or the platform's) key, `OPENAI_BASE_URL`, no SDK retries hidden inside a visitor's
request and our timeouts. Never the process-wide `set_default_openai_*`: that would mix tenants.
The HTTP connection pool is shared per event loop (a TLS handshake per turn would add latency).

`upstream_error(exc)` turns whatever the SDK raised into a `ChatKitError` phrased for the visitor:
neither the API key nor OpenAI's own message (which may quote it) ever reaches the browser.

Hosted Agent Builder sessions (`POST /chatkit/sessions`) are gone: OpenAI shut Agent Builder down
on 2026-11-30 and hosted widgets answer `hosted_retired` without calling OpenAI.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator

import httpx2
import openai
from agents import OpenAIProvider
from agents.exceptions import AgentsException, MaxTurnsExceeded, ModelBehaviorError
from django.conf import settings
from openai import AsyncOpenAI, DefaultAsyncHttpx2Client

from chatkit.admission import yield_to_admissions
from licenses.api import ApiError
from licenses.outbound import cookieless_jar

logger = logging.getLogger(__name__)


class ChatKitError(ApiError):
    """An upstream or configuration failure, already phrased for the browser."""

    def __init__(self, code: str, message: str, status_code: int):
        super().__init__(code, message, status_code=status_code)


ERRORS: dict[str, tuple[str, int]] = {
    "hosted_retired": (
        "This chat ran on an OpenAI Agent Builder workflow, which OpenAI shut down on 2026-11-30. The site owner "
        "needs to switch it to the Switchboard ChatKit server.",
        410,
    ),
    "not_configured": ("This chat isn't set up for this site yet: the site owner needs to connect it.", 503),
    "invalid_api_key": ("The chat's OpenAI API key was refused. The site owner needs to check it.", 502),
    "model_not_found": (
        "The chat's AI model is not available with its OpenAI key. The site owner needs to pick another model.",
        502,
    ),
    "upstream_rate_limited": ("The assistant is busy right now. Please try again in a minute.", 429),
    "upstream_timeout": ("The assistant took too long to answer. Please try again.", 504),
    "upstream_error": ("The assistant could not answer just now. Please try again shortly.", 502),
    "too_many_steps": ("That took too many steps. Please ask again in other words.", 502),
}
RETRYABLE = frozenset({"upstream_rate_limited", "upstream_timeout", "upstream_error", "too_many_steps"})


def chatkit_error(code: str) -> ChatKitError:
    message, status = ERRORS[code]
    return ChatKitError(code, message, status)


class _YieldingStream(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            await yield_to_admissions()
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


class _YieldingTransport(httpx2.AsyncBaseTransport):
    """The pooled transport, whose calls and response chunks come after the requests of this loop still before
    their first byte (chatkit.admission): a running answer's upstream reads and parsing wait for them."""

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await yield_to_admissions()
        response = await self._transport.handle_async_request(request)
        response.stream = _YieldingStream(response.stream)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = weakref.WeakKeyDictionary()


def _pool() -> httpx2.AsyncClient:
    """One pooled HTTP client per event loop (connections belong to the loop that opened them)."""
    loop = asyncio.get_running_loop()
    client = _pools.get(loop)
    if client is None:
        limits = httpx2.Limits(max_connections=200, max_keepalive_connections=50)
        client = _pools[loop] = DefaultAsyncHttpx2Client(
            transport=_YieldingTransport(httpx2.AsyncHTTPTransport(limits=limits)),
            cookies=cookieless_jar(),  # every tenant's calls share the pool (licenses.outbound)
        )
    return client


def openai_client(*, api_key: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=api_key,
        base_url=settings.OPENAI_BASE_URL,
        max_retries=0,
        http_client=_pool(),
        timeout=httpx2.Timeout(settings.CHATKIT_TIMEOUT, connect=settings.CHATKIT_CONNECT_TIMEOUT),
    )


def model_provider(*, api_key: str) -> OpenAIProvider:
    """Per request: the tenant's key, our base URL, the Responses API."""
    if not api_key:
        raise chatkit_error("not_configured")
    return OpenAIProvider(openai_client=openai_client(api_key=api_key), use_responses=True)


def upstream_error(exc: BaseException) -> ChatKitError | None:
    """The visitor-facing error for an exception from a run, or None when it is not an upstream failure."""
    if isinstance(exc, ChatKitError):
        return exc
    code = _code(exc)
    if code is None:
        return None
    logger.warning("chatkit run failed: %s (%s)", code, type(exc).__name__)
    return chatkit_error(code)


def _code(exc: BaseException) -> str | None:
    if isinstance(exc, MaxTurnsExceeded):
        return "too_many_steps"
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException | asyncio.TimeoutError):
        return "upstream_timeout"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "invalid_api_key"
    if isinstance(exc, openai.RateLimitError):
        return "upstream_rate_limited"
    if isinstance(exc, openai.NotFoundError):
        return "model_not_found"
    if isinstance(exc, openai.BadRequestError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        if "model" in str(error.get("code") or "") or error.get("param") == "model":
            return "model_not_found"
        return "upstream_error"
    if isinstance(exc, openai.APIError | httpx2.HTTPError | ModelBehaviorError):
        return "upstream_error"
    if isinstance(exc, AgentsException) and exc.__cause__ is not None:
        return _code(exc.__cause__)
    return None
