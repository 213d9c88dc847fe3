"""The one client for n8n Chat Trigger webhooks (httpx), and the mapping of its replies.

The request is exactly what n8n's own chat widget sends:
    POST <webhook_url>  {"action": "sendMessage", "sessionId": ..., "chatInput": ..., "metadata": {...}}
    POST <webhook_url>  {"action": "loadPreviousSession", "sessionId": ..., "metadata": {...}}
Replies:
- sendMessage: `{"output": "..."}` (fallbacks `text`, then `message`), or a list of such objects;
  optionally `"ui": [<ui event>, ...]` (shapes in widgets/ui_events.py) for cards and forms.
- streaming (the trigger's "Streaming" response mode): one JSON object per line,
  `{"type": "begin"|"item"|"end"|"error", "content"?: "...", "metadata": {...}}`.
- loadPreviousSession: `{"data": [<LangChain message>, ...]}` or a bare list; a LangChain message is
  `{"id": ["langchain_core", "messages", "HumanMessage"|"AIMessage"], "kwargs": {"content": "..."}}`.

Errors raise `N8nError` with a public code; messages never contain the webhook URL (it is a tenant
secret: whoever knows it can call the workflow directly).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import json
import logging
import socket
import ssl
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from licenses.api import ApiError
from widgets.aio import upstream_run
from widgets.ui_events import ui_events_clean

logger = logging.getLogger(__name__)

MAX_REPLY_BYTES = 2_000_000


class N8nError(ApiError):
    """A failed upstream call, already mapped to what the browser may learn."""

    def __init__(self, code: str, message: str, status_code: int, *, upstream_status: int | None = None):
        super().__init__(code, message, status_code=status_code)
        # n8n's own HTTP status when it answered one (for the failure record, never for the visitor).
        self.upstream_status = upstream_status


def upstream_json(raw: bytes | str) -> Any:
    """Parse what n8n sent. Anything that is not JSON raises ValueError, JSON nested past the parser's
    recursion limit included (json.loads raises RecursionError there), so a broken or hostile webhook
    is an upstream error, never a 500. The one parse of n8n bodies: the proxy and Test connection."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _timeout_error() -> N8nError:
    return N8nError("upstream_timeout", "The assistant took too long to answer. Please try again.", 504)


def _upstream_error(detail: str, *, status: int | None = None) -> N8nError:
    # `detail` is for our logs only and never includes the URL.
    logger.warning("n8n upstream error: %s", detail)
    return N8nError(
        "upstream_error", "The assistant is unavailable right now. Please try again.", 502, upstream_status=status
    )


@dataclass(frozen=True)
class N8nTarget:
    url: str
    auth: tuple[str, str] | None = None


@dataclass
class N8nReply:
    text: str
    ui: list[dict[str, Any]] = field(default_factory=list)


N8N_AUTH_BINDING = "n8n_basic_auth_url"


def n8n_destination(config: dict[str, Any]) -> str:
    """The address the n8n basic-auth credentials are bound to: the exact webhook URL."""
    return (config.get("connection", {}).get("n8n", {}).get("webhook_url") or "").strip()


def n8n_target(*, config: dict[str, Any], secrets: dict[str, Any] | None) -> N8nTarget | None:
    """Where the config sends chat, with basic auth when enabled; None when not configured.

    The stored credentials are bound to the exact webhook URL they were saved with
    (`n8n_basic_auth_url`, set by widgets.services.widgets.secrets_clean): a config that points the
    webhook anywhere else never carries them there, so nobody can read them back through a URL of
    their own."""
    n8n = config.get("connection", {}).get("n8n", {})
    url = n8n_destination(config)
    if not url:
        return None
    auth = None
    secrets = secrets or {}
    user, password = secrets.get("n8n_basic_auth_user") or "", secrets.get("n8n_basic_auth_password") or ""
    if n8n.get("basic_auth") and user and password and secrets.get(N8N_AUTH_BINDING) == url:
        auth = (user, password)
    return N8nTarget(url=url, auth=auth)


def n8n_target_allowed(url: str) -> bool:
    """Whether the server may call this webhook: never a loopback, private, link-local or reserved
    address unless N8N_ALLOW_PRIVATE_NETWORKS (on for development and tests, off in production)."""
    if settings.N8N_ALLOW_PRIVATE_NETWORKS:
        return True
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return True  # unresolvable: the request itself fails as unreachable
    return _all_public(infos)


def _all_public(infos: list[tuple[Any, ...]]) -> bool:
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            return False
    return True


def _forbidden_target() -> N8nError:
    logger.warning("n8n webhook refused: it resolves to a non-public address")
    return N8nError("target_not_allowed", "The assistant's address is not allowed. Contact the site owner.", 502)


def n8n_payload(*, action: str, session_id: str, chat_input: str | None, metadata: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": action, "sessionId": session_id}
    if action == "sendMessage":
        payload["chatInput"] = chat_input or ""
    payload["metadata"] = metadata
    return payload


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(settings.N8N_TOTAL_TIMEOUT, connect=settings.N8N_CONNECT_TIMEOUT)


# The pooled n8n clients of the process (issue 11.2), one set per long-lived loop (the ASGI server's,
# or the upstream loop: widgets/aio.py): ONE SSL context (the CA bundle loaded once; a client per
# message cost ~46 ms of CPU for it), kept-alive connections, bounded by N8N_MAX_CONNECTIONS. The pool is
# split into N8N_CLIENT_SHARDS httpx clients taken in turn, all on that one SSL context: httpcore's pool
# does O(requests x connections^2) work (it checks every connection's expiry and idleness on each
# request), so one client with 200 calls in flight spends ~15 ms of CPU per call; 64 shards keep a few
# connections each (bench/chat_proxy.py).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[httpx.AsyncClient]] = weakref.WeakKeyDictionary()
_next_shard = itertools.count()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def n8n_client() -> httpx.AsyncClient:
    """One of the running loop's pooled clients (created on first use, then reused)."""
    loop = asyncio.get_running_loop()
    shards = _clients.get(loop)
    if shards is None or any(client.is_closed for client in shards):
        count = max(1, settings.N8N_CLIENT_SHARDS)
        limits = httpx.Limits(
            max_connections=max(1, settings.N8N_MAX_CONNECTIONS // count),
            max_keepalive_connections=max(1, settings.N8N_MAX_KEEPALIVE // count),
            # Below the 5 s keep-alive of Node (n8n) and most servers: never reuse a connection the
            # other side is closing, which would fail the visitor's message.
            keepalive_expiry=settings.N8N_KEEPALIVE_EXPIRY,
        )
        shards = [
            httpx.AsyncClient(
                timeout=_timeout(),
                follow_redirects=False,
                headers={"Accept": "application/json"},
                limits=limits,
                verify=_ssl_context(),
            )
            for _ in range(count)
        ]
        _clients[loop] = shards
    return shards[next(_next_shard) % len(shards)]


async def n8n_target_allowed_async(url: str) -> bool:
    """`n8n_target_allowed` without blocking the event loop on DNS."""
    if settings.N8N_ALLOW_PRIVATE_NETWORKS:
        return True
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return True  # unresolvable: the request itself fails as unreachable
    return _all_public(infos)


async def _post_json(target: N8nTarget, payload: dict[str, Any]) -> Any:
    if not await n8n_target_allowed_async(target.url):
        raise _forbidden_target()
    try:
        async with asyncio.timeout(settings.N8N_TOTAL_TIMEOUT):
            async with n8n_client().stream("POST", target.url, json=payload, auth=target.auth) as response:
                if response.status_code >= 400:
                    raise _upstream_error(f"status {response.status_code}", status=response.status_code)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_REPLY_BYTES:
                        raise _upstream_error("reply too large")
                content_type = response.headers.get("content-type", "")
    except (httpx.TimeoutException, TimeoutError):
        raise _timeout_error()
    except httpx.HTTPError as exc:
        raise _upstream_error(type(exc).__name__)
    try:
        return upstream_json(body)
    except ValueError:
        # n8n's "Respond to Webhook" node may answer plain text; treat it as the output.
        text = body.decode("utf-8", errors="replace").strip()
        if text and "json" not in content_type:
            return {"output": text}
        raise _upstream_error("unparsable reply")


def _text_of(obj: Any) -> str | None:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        for key in ("output", "text", "message"):
            value = obj.get(key)
            if isinstance(value, str):
                return value
    return None


def reply_parse(data: Any) -> N8nReply:
    """`{"output"}` / `{"text"}` / `{"message"}` or a list of them (texts joined), plus `ui` events."""
    items = data if isinstance(data, list) else [data]
    texts: list[str] = []
    ui: list[dict[str, Any]] = []
    for item in items:
        text = _text_of(item)
        if text is not None:
            texts.append(text)
        if isinstance(item, dict):
            ui.extend(ui_events_clean(item.get("ui")))
    if not texts and not ui:
        raise _upstream_error("reply without output")
    return N8nReply(text="\n\n".join(t for t in texts if t), ui=ui[:10])


async def n8n_send_async(*, target: N8nTarget, session_id: str, chat_input: str, metadata: dict[str, Any]) -> N8nReply:
    """One non-streaming turn (run it on the upstream loop: widgets.aio.upstream_await)."""
    payload = n8n_payload(action="sendMessage", session_id=session_id, chat_input=chat_input, metadata=metadata)
    return reply_parse(await _post_json(target, payload))


def n8n_send(*, target: N8nTarget, session_id: str, chat_input: str, metadata: dict[str, Any]) -> N8nReply:
    """`n8n_send_async` for sync callers (the configurator's Test connection)."""
    return upstream_run(n8n_send_async(target=target, session_id=session_id, chat_input=chat_input, metadata=metadata))


def history_parse(data: Any) -> list[dict[str, str]]:
    """LangChain memory messages → [{role, text}] (unknown kinds are skipped)."""
    if isinstance(data, dict):
        data = data.get("data", data.get("messages", []))
    if not isinstance(data, list):
        raise _upstream_error("history is not a list")
    out: list[dict[str, str]] = []
    for item in data:
        if not isinstance(item, dict):
            continue
        kind = item.get("id")
        name = kind[-1] if isinstance(kind, list) and kind else item.get("type", "")
        kwargs = item.get("kwargs") if isinstance(item.get("kwargs"), dict) else item
        content = kwargs.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            continue
        if name in ("HumanMessage", "human", "user"):
            out.append({"role": "user", "text": content})
        elif name in ("AIMessage", "ai", "assistant"):
            out.append({"role": "assistant", "text": content})
    return out[-200:]


async def n8n_history_async(*, target: N8nTarget, session_id: str, metadata: dict[str, Any]) -> list[dict[str, str]]:
    payload = n8n_payload(action="loadPreviousSession", session_id=session_id, chat_input=None, metadata=metadata)
    return history_parse(await _post_json(target, payload))


def n8n_history(*, target: N8nTarget, session_id: str, metadata: dict[str, Any]) -> list[dict[str, str]]:
    return upstream_run(n8n_history_async(target=target, session_id=session_id, metadata=metadata))


class N8nStream:
    """A streaming reply. `await open()` (connects and checks the status, may raise N8nError), then
    iterate `batches()` for lists of normalised events: {"type": "item", "content"} ... then a final
    {"type": "end", "output", "ui"} or {"type": "error", "code", "message"}. Always `await aclose()`.

    All of it runs on the upstream loop (widgets/aio.py); events come in batches (what one network
    read produced) so a relay on another loop crosses threads once per read, not once per token."""

    def __init__(self, *, target: N8nTarget, session_id: str, chat_input: str, metadata: dict[str, Any]):
        self.target = target
        self.payload = n8n_payload(
            action="sendMessage", session_id=session_id, chat_input=chat_input, metadata=metadata
        )
        self.deadline = time.monotonic() + settings.N8N_TOTAL_TIMEOUT
        self.text_parts: list[str] = []
        self.ui: list[dict[str, Any]] = []
        self.ok = False
        self.error: N8nError | None = None
        self._response: httpx.Response | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def _left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def open(self) -> None:
        if not await n8n_target_allowed_async(self.target.url):
            raise _forbidden_target()
        client = n8n_client()
        request = client.build_request("POST", self.target.url, json=self.payload)
        try:
            async with asyncio.timeout(self._left()):
                self._response = await client.send(request, stream=True, auth=self.target.auth)
        except (httpx.TimeoutException, TimeoutError):
            raise _timeout_error()
        except httpx.HTTPError as exc:
            raise _upstream_error(type(exc).__name__)
        if self._response.status_code >= 400:
            status = self._response.status_code
            await self.aclose()
            raise _upstream_error(f"status {status}", status=status)

    async def aclose(self) -> None:
        if self._response is not None:
            response, self._response = self._response, None
            await response.aclose()

    def _line_event(self, line: str) -> dict[str, Any] | None:
        try:
            obj = upstream_json(line)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        kind = obj.get("type")
        if kind == "item":
            content = obj.get("content")
            if isinstance(content, str) and content:
                self.text_parts.append(content)
                return {"type": "item", "content": content}
            return None
        if kind == "error":
            raise _upstream_error("stream error event")
        if kind is None:
            # A non-streaming JSON reply on a streaming widget: accept it whole.
            reply = reply_parse(obj)
            self.text_parts.append(reply.text)
            self.ui.extend(reply.ui)
            return {"type": "item", "content": reply.text} if reply.text else None
        if isinstance(obj.get("ui"), list):
            self.ui.extend(ui_events_clean(obj["ui"]))
        return None

    def _fail(self, error: N8nError) -> list[dict[str, Any]]:
        self.error = error
        return [{"type": "error", "code": error.code, "message": error.message}]

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        assert self._response is not None, "open() first"
        chunks = self._response.aiter_text()
        buffer = ""
        batch: list[dict[str, Any]] = []
        try:
            while True:
                try:
                    async with asyncio.timeout(self._left()):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                buffer += chunk
                # n8n separates objects by newlines; some versions concatenate `}{` without one.
                buffer = buffer.replace("}{", "}\n{")
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    if line.strip() and (event := self._line_event(line.strip())):
                        batch.append(event)
                if batch:
                    yield batch
                    batch = []
            if buffer.strip() and (event := self._line_event(buffer.strip())):
                batch.append(event)
            self.ok = True
            batch.append({"type": "end", "output": self.text, "ui": self.ui[:10]})
        except (httpx.TimeoutException, TimeoutError):
            batch.extend(self._fail(_timeout_error()))
        except httpx.HTTPError as exc:
            batch.extend(self._fail(_upstream_error(type(exc).__name__)))
        except N8nError as error:
            batch.extend(self._fail(error))
        finally:
            await self.aclose()
        yield batch
