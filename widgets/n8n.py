"""The one client for n8n Chat Trigger webhooks (aiohttp), and the mapping of its replies.

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
import atexit
import base64
import codecs
import contextlib
import functools
import io
import ipaddress
import json
import logging
import re
import socket
import ssl
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings

from licenses.api import ApiError, storable
from widgets.aio import upstream_run
from widgets.ui_events import ui_events_clean

logger = logging.getLogger(__name__)

MAX_REPLY_BYTES = 2_000_000
# A streamed reply's bytes as read: n8n's lines carry metadata with every token (~5x the text), and what a stream
# sends is held (the answer) and scanned, so a runaway or hostile webhook is cut here, as a whole reply is above.
MAX_STREAM_BYTES = 8_000_000


class N8nError(ApiError):
    """A failed upstream call, already mapped to what the browser may learn."""

    def __init__(self, code: str, message: str, status_code: int, *, upstream_status: int | None = None):
        super().__init__(code, message, status_code=status_code)
        # n8n's own HTTP status when it answered one (for the failure record, never for the visitor).
        self.upstream_status = upstream_status


# 20 digits in a row may be an integer past 64 bits, which orjson would read as a float: the standard library's.
_LONG_NUMBER, _LONG_NUMBER_TEXT = re.compile(rb"[0-9]{20}"), re.compile(r"[0-9]{20}")
# The JSON escapes of what PostgreSQL cannot store and UTF-8 cannot encode: NUL and lone surrogates (a pair is
# matched too; `storable` keeps it, as the parse has joined it into one character).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE_ESCAPE_TEXT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def upstream_json(raw: bytes | str) -> Any:
    """Parse what n8n sent. Anything that is not JSON raises ValueError, JSON nested past the parser's
    recursion limit included (json.loads raises RecursionError there), so a broken or hostile webhook
    is an upstream error, never a 500. The one parse of n8n bodies: the proxy and Test connection.

    orjson first (issue 11 bench: every streamed line and every reply is parsed here, several times faster).
    What it refuses (NaN or Infinity, a lone surrogate escape, nesting past its 1,024 levels) and text with 20
    digits in a row (an integer past 64 bits, which orjson would read as a float) go to the standard library,
    which decides as before. Strings with NUL or a lone surrogate come out `storable`: from orjson when the text holds
    such an escape, from the standard library always (it also reads UTF-8-encoded surrogates and UTF-16/32)."""
    text = isinstance(raw, str)
    try:
        if not (_LONG_NUMBER_TEXT if text else _LONG_NUMBER).search(raw):
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
            else:  # orjson reads UTF-8 only: a NUL or a lone surrogate can only come as an escape here
                escaped = (_UNSTORABLE_ESCAPE_TEXT if text else _UNSTORABLE_ESCAPE).search(raw)
                return storable(value) if escaped else value
        # The standard library also reads a surrogate encoded as UTF-8 bytes (surrogatepass) and UTF-16/32 bodies,
        # whose escapes the patterns above do not see: what it returns is always mended (a rare path).
        return storable(json.loads(raw))
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
    address unless N8N_ALLOW_PRIVATE_NETWORKS (on for development and tests, off in production).
    For the checks outside a call (Test connection, health, lead delivery); a call itself is checked
    where it connects (`_PublicResolver`)."""
    if settings.N8N_ALLOW_PRIVATE_NETWORKS:
        return True
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return True  # unresolvable: the request itself fails as unreachable
    return _all_public(info[4][0] for info in infos)


def _all_public(addresses: Any) -> bool:
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
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


# --- the process's pooled client -----------------------------------------------------------------
#
# One aiohttp session per long-lived loop (the ASGI server's, or the upstream loop: widgets/aio.py), issue
# 11.2: ONE SSL context (the CA bundle loaded once; a client per message cost ~46 ms of CPU for it) and
# kept-alive connections, at most N8N_MAX_CONNECTIONS. aiohttp rather than httpx (issue 11 bench,
# bench/chat_proxy.py): httpx + httpcore spent ~0.55 ms of CPU per call with 200 calls in flight (its pool
# re-checks every connection on each request; one client cost ~15 ms per call until it was split into 64),
# aiohttp ~0.1 ms (C HTTP parser, a per-host deque of idle connections).

DNS_CACHE_SECONDS = 10  # how long a webhook host's checked addresses are reused (aiohttp's DNS cache)
JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


class _TargetNotPublic(OSError):
    """A webhook host with a non-public address (N8N_ALLOW_PRIVATE_NETWORKS off)."""


class _PublicResolver(AbstractResolver):
    """aiohttp's resolver that refuses a host when any of its addresses is not public, at the moment the
    pool connects: the addresses checked are exactly the ones connected to (no second lookup that a
    rebinding DNS server could answer differently), and aiohttp's DNS cache keeps only accepted answers,
    for DNS_CACHE_SECONDS, so a turn costs no lookup of its own. IP literals never reach a resolver:
    `_literal_refused` checks those before each call."""

    def __init__(self) -> None:
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        hosts = await self._resolver.resolve(host, port, family)
        if not _all_public(entry["host"] for entry in hosts):
            raise _TargetNotPublic("a non-public address")  # no host: the webhook's address is the tenant's
        return hosts

    async def close(self) -> None:
        await self._resolver.close()


def _literal_refused(url: str) -> bool:
    """An IP-literal webhook host that is not public (when private networks are refused)."""
    if settings.N8N_ALLOW_PRIVATE_NETWORKS:
        return False
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name: `_PublicResolver` checks it where it connects
    return not _all_public([host])


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[bool, aiohttp.ClientSession]] = (
    weakref.WeakKeyDictionary()
)


_closing: set[asyncio.Task[None]] = set()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # certifi's CA bundle, as every other outgoing call of ours


def n8n_session() -> aiohttp.ClientSession:
    """The running loop's pooled session (created on first use, then reused; again when
    N8N_ALLOW_PRIVATE_NETWORKS changed, as in tests, so no address accepted under the other rule is reused)."""
    loop = asyncio.get_running_loop()
    private = settings.N8N_ALLOW_PRIVATE_NETWORKS
    entry = _sessions.get(loop)
    if entry is None or entry[0] != private or entry[1].closed:
        if entry is not None and not entry[1].closed:
            closing = loop.create_task(entry[1].close())
            _closing.add(closing)  # held until done (the loop keeps only a weak reference to a task)
            closing.add_done_callback(_closing.discard)
        connector = aiohttp.TCPConnector(
            limit=settings.N8N_MAX_CONNECTIONS,
            limit_per_host=0,
            # Below the 5 s keep-alive of Node (n8n) and most servers: never reuse a connection the
            # other side is closing, which would fail the visitor's message.
            keepalive_timeout=settings.N8N_KEEPALIVE_EXPIRY,
            ssl=_ssl_context(),
            ttl_dns_cache=DNS_CACHE_SECONDS,
            resolver=None if private else _PublicResolver(),
        )
        # No cookie jar: the session carries every visitor's message to every tenant's webhook, and a jar would
        # send the cookies one answer set with everyone's later messages to that host.
        session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        entry = _sessions[loop] = (private, session)
    return entry[1]


@atexit.register
def _sessions_close() -> None:
    """Close the pooled sessions when the process exits, so aiohttp does not log each one as unclosed: on
    their loop when it still runs (the upstream loop's thread) or can run once more (stopped); when the loop
    is closed (a Uvicorn worker's, after its server stopped) nothing can be awaited, so the connections are
    dropped without I/O (`_close`: aiohttp 3.14's synchronous half of `close()`, pinned)."""
    for loop, (_, session) in list(_sessions.items()):
        if session.closed:
            continue
        with contextlib.suppress(Exception):
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=2)
            elif not loop.is_closed():
                loop.run_until_complete(session.close())
            else:
                connector = session.connector
                session.detach()
                connector._close()


def _timeout() -> aiohttp.ClientTimeout:
    """The whole call (connecting, waiting for a pooled connection, reading the last byte) within
    N8N_TOTAL_TIMEOUT; the TCP/TLS connect within N8N_CONNECT_TIMEOUT."""
    return aiohttp.ClientTimeout(total=settings.N8N_TOTAL_TIMEOUT, sock_connect=settings.N8N_CONNECT_TIMEOUT)


def _headers(auth: tuple[str, str] | None) -> dict[str, str]:
    if auth is None:
        return JSON_HEADERS
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()  # RFC 7617 with UTF-8
    return {**JSON_HEADERS, "Authorization": f"Basic {token}"}


def n8n_request(url: str, payload: dict[str, Any], auth: tuple[str, str] | None) -> Any:
    """POST `payload` to the webhook on the pooled session: `async with n8n_request(...) as response`, or
    `await` it (then `release()` the response). No redirects followed. Raises aiohttp errors and
    TimeoutError (see `n8n_error`)."""
    if _literal_refused(url):
        raise _TargetNotPublic("a non-public address")
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    return n8n_session().post(url, data=body, headers=_headers(auth), allow_redirects=False, timeout=_timeout())


def n8n_error(exc: BaseException) -> N8nError:
    """The N8nError for what a call raised (timeouts before connection errors: aiohttp's are both)."""
    if isinstance(exc, TimeoutError):
        return _timeout_error()
    if isinstance(exc, _TargetNotPublic) or isinstance(getattr(exc, "os_error", None), _TargetNotPublic):
        return _forbidden_target()
    return _upstream_error(type(exc).__name__)


CALL_ERRORS = (aiohttp.ClientError, TimeoutError, _TargetNotPublic)


async def _post_json(target: N8nTarget, payload: dict[str, Any]) -> Any:
    try:
        async with n8n_request(target.url, payload, target.auth) as response:
            if response.status >= 400:
                raise _upstream_error(f"status {response.status}", status=response.status)
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > MAX_REPLY_BYTES:
                    raise _upstream_error("reply too large")
            content_type = response.headers.get("content-type", "")
    except CALL_ERRORS as exc:
        raise n8n_error(exc) from None
    try:
        return upstream_json(body)
    except ValueError:
        # n8n's "Respond to Webhook" node may answer plain text; treat it as the output.
        text = storable(body.decode("utf-8", errors="replace").strip())
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


class NdjsonLines:
    """The lines of an NDJSON stream from its decoded text as it arrives. Each piece is scanned once: a line split
    over many reads is joined when its newline comes, not rescanned with every read (a webhook sending one long
    line in small pieces would otherwise cost the loop time quadratic in its length). n8n separates objects by
    newlines; some versions concatenate `}{` without one, which is split too (also across two reads)."""

    def __init__(self) -> None:
        # The current line before its newline, appended in place: a list of one small str per read held ~30x the
        # line's size when a webhook dripped it in 2-byte reads; a StringIO holds about the line itself.
        self._pending: io.StringIO | None = None
        self._last = ""  # the last character fed

    def feed(self, text: str) -> list[str]:
        """The lines `text` completes (without their newlines)."""
        if not text:
            return []
        if self._last == "}" and text[0] == "{":
            text = "\n" + text
        self._last = text[-1]
        text = text.replace("}{", "}\n{")
        if "\n" not in text:
            self._keep(text)
            return []
        first, *complete, tail = text.split("\n")
        lines = [self.rest() + first, *complete]
        self._pending = None
        if tail:
            self._keep(tail)
        return lines

    def _keep(self, text: str) -> None:
        if self._pending is None:
            self._pending = io.StringIO()
        self._pending.write(text)

    def rest(self) -> str:
        """What came after the last newline (the stream's last line when it ends without one)."""
        return self._pending.getvalue() if self._pending is not None else ""


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
        self.text_parts: list[str] = []
        self.ui: list[dict[str, Any]] = []
        self.ok = False
        self.error: N8nError | None = None
        self._response: aiohttp.ClientResponse | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    async def open(self) -> None:
        """Send the request and read the status. The call's N8N_TOTAL_TIMEOUT runs from here to the last
        byte read in `batches()` (aiohttp's timer, whichever task reads)."""
        try:
            self._response = await n8n_request(self.target.url, self.payload, self.target.auth)
        except CALL_ERRORS as exc:
            raise n8n_error(exc) from None
        if self._response.status >= 400:
            status = self._response.status
            await self.aclose()
            raise _upstream_error(f"status {status}", status=status)

    async def aclose(self) -> None:
        """Give the connection back (or close it when the reply was not read to its end)."""
        if self._response is not None:
            response, self._response = self._response, None
            response.release()

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
        chunks = self._response.content
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        lines = NdjsonLines()
        received = 0
        batch: list[dict[str, Any]] = []
        try:
            while chunk := await chunks.readany():
                received += len(chunk)
                if received > MAX_STREAM_BYTES:
                    raise _upstream_error("stream too large")
                for line in lines.feed(decoder.decode(chunk)):
                    if line.strip() and (event := self._line_event(line.strip())):
                        batch.append(event)
                if batch:
                    yield batch
                    batch = []
            for line in (*lines.feed(decoder.decode(b"", final=True)), lines.rest()):
                if line.strip() and (event := self._line_event(line.strip())):
                    batch.append(event)
            self.ok = True
            batch.append({"type": "end", "output": self.text, "ui": self.ui[:10]})
        except CALL_ERRORS as exc:
            batch.extend(self._fail(n8n_error(exc)))
        except N8nError as error:
            batch.extend(self._fail(error))
        finally:
            await self.aclose()
        yield batch
