""" "Test connection" for the configurator: ask the widget's upstream what a visitor would ask, and
report in plain words what that visitor would get.

n8n: a real `sendMessage` (a Chat Trigger answers `loadPreviousSession` without running the
workflow, so that proves nothing), in a session marked as a test (`sessionId`
`switchboard-connection-test-…`, `metadata.test = true`). Nothing is recorded: no conversation, no
usage. It goes out on the chat proxy's own pooled client (widgets/n8n.py builds the request and
parses the reply), waits as long as a visitor would (N8N_TOTAL_TIMEOUT), then names the exact failure:
timeout, server error, bad credentials, unknown webhook, not a Chat Trigger, streaming mismatch.

Never echoes secrets; from an upstream error it quotes at most n8n's own short `message`.

ChatKit widgets are tested by chatkit/connection_test.py (registered in `PROVIDER_TESTS` by the chatkit app).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings

from widgets.aio import upstream_run
from widgets.n8n import (
    CALL_ERRORS,
    MAX_REPLY_BYTES,
    N8nError,
    NdjsonLines,
    n8n_error,
    n8n_payload,
    n8n_request,
    n8n_target,
    n8n_target_allowed,
    reply_parse,
    upstream_json,
)

TEST_SESSION = "switchboard-connection-test"
TEST_MESSAGE = "Hello! This is a connection test from Switchboard."
TEST_METADATA = {"source": "switchboard-connection-test", "test": True}
MAX_TEST_MESSAGE = 500
SLOW_SECONDS = 15
NOT_ALLOWED = (
    "The webhook address points to a private or internal network, which "
    "Switchboard does not call. Use the n8n instance's public address."
)


@dataclass(frozen=True)
class ConnectionResult:
    ok: bool
    # ok | not_configured | not_allowed | unauthorised | not_found | timeout | unreachable | redirect
    # | upstream_error | not_chat_trigger | streaming_mismatch
    code: str
    message: str
    reply: str = ""
    latency_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "code": self.code, "message": self.message}
        if self.reply:
            out["reply"] = self.reply
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
        return out


def connection_fail(code: str, message: str, latency_ms: int | None = None) -> ConnectionResult:
    return ConnectionResult(False, code, message, latency_ms=latency_ms)


def _seconds(ms: int) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _quote(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return "“" + (text if len(text) <= limit else text[: limit - 1] + "…") + "”"


def _n8n_says(body: bytes) -> str:
    """n8n's own short error message (`{"message": "..."}`), to quote; never the whole body."""
    try:
        data = upstream_json(body)
    except ValueError:
        return ""
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str) and 0 < len(message) <= 200:
        return f" n8n said: {_quote(message)}."
    return ""


@dataclass(frozen=True)
class _Answer:
    status: int
    content_type: str
    body: bytes


async def _post(url: str, payload: dict[str, Any], auth: tuple[str, str] | None) -> _Answer:
    """The test's one request, on the pooled n8n session and the upstream loop the chat proxy uses,
    within the total time a visitor waits (the session's N8N_TOTAL_TIMEOUT)."""
    body = bytearray()
    async with n8n_request(url, payload, auth) as response:
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > MAX_REPLY_BYTES:
                break
        return _Answer(response.status, response.headers.get("content-type", "").lower(), bytes(body))


def _stream_lines(body: bytes) -> list[dict[str, Any]] | None:
    """The NDJSON events of a streaming Chat Trigger reply, or None when the body is not a stream."""
    lines = NdjsonLines()  # the proxy's own line splitting (`}{` included)
    events = []
    for line in (*lines.feed(body.decode("utf-8", errors="replace")), lines.rest()):
        if not line.strip():
            continue
        try:
            obj = upstream_json(line)
        except ValueError:
            return None
        if not isinstance(obj, dict) or obj.get("type") not in ("begin", "item", "end", "error"):
            return None
        events.append(obj)
    return events or None


def _classify(answer: _Answer, *, config: dict[str, Any], ms: int) -> ConnectionResult:
    status, ctype, body = answer.status, answer.content_type, answer.body
    n8n = config["connection"]["n8n"]
    if 300 <= status < 400:
        return connection_fail(
            "redirect",
            f"The webhook address redirects elsewhere ({status}); visitors' messages would "
            "not arrive. Use the final address of the Chat Trigger.",
            ms,
        )
    if status in (401, 403):
        if not n8n.get("basic_auth"):
            return connection_fail(
                "unauthorised",
                f"The Chat Trigger asks for a username and password ({status}). Turn on "
                "basic auth and enter the credentials set on the trigger.",
                ms,
            )
        return connection_fail(
            "unauthorised",
            f"The Chat Trigger refused the username and password ({status}). Check "
            "the credentials on the trigger and here.",
            ms,
        )
    if status == 404:
        return connection_fail(
            "not_found",
            "n8n does not know this webhook (404). Check the URL, and that the workflow is "
            "active: the test URL only answers while the n8n editor is listening." + _n8n_says(body),
            ms,
        )
    if status >= 500:
        return connection_fail(
            "upstream_error",
            f"The workflow failed with a server error ({status}), so visitors would get "
            "an error instead of an answer." + _n8n_says(body),
            ms,
        )
    if status >= 400:
        return connection_fail("upstream_error", f"n8n refused the message ({status})." + _n8n_says(body), ms)
    if "text/html" in ctype:
        return connection_fail(
            "not_chat_trigger",
            "The address answered with a web page, not a chat reply: it is not an "
            "n8n Chat Trigger. Copy the chat URL from the Chat Trigger node.",
            ms,
        )
    events = _stream_lines(body)
    if events is not None:
        if not n8n.get("streaming"):
            return connection_fail(
                "streaming_mismatch",
                "The workflow streams its answer, but stream replies is off here, "
                "so visitors would get an error. Turn on stream replies.",
                ms,
            )
        if any(e.get("type") == "error" for e in events):
            return connection_fail(
                "upstream_error",
                "The workflow started answering, then failed: visitors would see the answer cut off with an error.",
                ms,
            )
        text = "".join(
            e.get("content", "") for e in events if e.get("type") == "item" and isinstance(e.get("content"), str)
        )
        return _answered(text, [], ms)
    try:
        data = upstream_json(body)
    except ValueError:
        text = body.decode("utf-8", errors="replace").strip()
        if text and "json" not in ctype:
            return _answered(text, [], ms)  # the proxy takes a plain-text reply as the answer
        return connection_fail(
            "not_chat_trigger",
            "The reply is empty or not readable, so visitors would get an error. Is this the Chat Trigger's URL?",
            ms,
        )
    try:
        reply = reply_parse(data)
    except N8nError:
        return connection_fail(
            "not_chat_trigger",
            "The workflow answered, but without any text for the visitor: this does "
            "not look like an n8n Chat Trigger. Make the last node return an output field.",
            ms,
        )
    if reply.text.strip() == "Workflow was started" and not reply.ui:
        return connection_fail(
            "not_chat_trigger",
            "This is an n8n webhook that answers before the workflow runs "
            "(“Workflow was started”), not a Chat Trigger. Use a Chat Trigger node.",
            ms,
        )
    return _answered(reply.text, reply.ui, ms)


def _answered(text: str, ui: list[dict[str, Any]], ms: int) -> ConnectionResult:
    if not text.strip() and not ui:
        return connection_fail("not_chat_trigger", "The workflow answered with nothing to show the visitor.", ms)
    extras = ""
    cards = sum(len(e.get("products", [])) for e in ui if e.get("type") == "ui.product_cards")
    if cards:
        extras = f", with {cards} product card{'s' if cards != 1 else ''}"
    elif ui:
        extras = f", with {len(ui)} interactive element{'s' if len(ui) != 1 else ''}"
    message = f"Connected. The workflow answered in {_seconds(ms)}{extras}: {_quote(text) if text else '(no text)'}"
    if ms >= SLOW_SECONDS * 1000:
        message += f". That is slow: visitors wait {_seconds(ms)} for every answer."
    return ConnectionResult(True, "ok", message, reply=text[:2000], latency_ms=ms)


def n8n_connection_test(*, config: dict[str, Any], secrets: dict[str, str], message: str = "") -> ConnectionResult:
    target = n8n_target(config=config, secrets=secrets)
    if target is None:
        return connection_fail("not_configured", "Enter the n8n webhook URL first.")
    if config["connection"]["n8n"].get("basic_auth") and target.auth is None:
        return connection_fail(
            "not_configured",
            "Basic auth is on: enter the username and password (again, if you changed "
            "the webhook's address: they only go to the address they were saved with).",
        )
    if not n8n_target_allowed(target.url):
        return connection_fail("not_allowed", NOT_ALLOWED)
    host = urlsplit(target.url).hostname or "the webhook"
    payload = n8n_payload(
        action="sendMessage",
        session_id=f"{TEST_SESSION}-{uuid.uuid4().hex[:12]}",
        chat_input=(message or TEST_MESSAGE)[:MAX_TEST_MESSAGE],
        metadata=dict(TEST_METADATA),
    )
    limit = settings.N8N_TOTAL_TIMEOUT
    started = time.monotonic()
    try:
        answer = upstream_run(_post(target.url, payload, target.auth))
    except aiohttp.ConnectionTimeoutError:
        return connection_fail(
            "unreachable",
            f"Could not connect to {host} within {settings.N8N_CONNECT_TIMEOUT:g} "
            "seconds. Check the address and that n8n is running.",
        )
    except CALL_ERRORS as exc:
        return _call_failed(exc, host=host, limit=limit)
    ms = int((time.monotonic() - started) * 1000)
    return _classify(answer, config=config, ms=ms)


def _call_failed(exc: BaseException, *, host: str, limit: float) -> ConnectionResult:
    code = n8n_error(exc).code
    if code == "upstream_timeout":
        return connection_fail(
            "timeout",
            f"The workflow did not answer within {limit:g} seconds, so visitors would see "
            "a timeout message instead of an answer.",
        )
    if code == "target_not_allowed":
        return connection_fail("not_allowed", NOT_ALLOWED)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return connection_fail(
            "unreachable", f"Could not connect to {host}. Check the address and that n8n is running."
        )
    return connection_fail("unreachable", f"The connection to {host} broke off before an answer arrived.")


# The provider's test: n8n here; chatkit registers its own (chatkit/connection_test.py, from its AppConfig),
# so the configurator reaches every provider's test without widgets importing a channel.
PROVIDER_TESTS: dict[str, Callable[..., ConnectionResult]] = {}


def connection_test_register(provider: str, test: Callable[..., ConnectionResult]) -> None:
    PROVIDER_TESTS[provider] = test


def connection_test(*, config: dict[str, Any], secrets: dict[str, str], message: str = "") -> ConnectionResult:
    """`config` is a normalized draft config; `secrets` the widget's decrypted secrets."""
    provider = config["connection"]["provider"]
    if provider == "n8n":
        return n8n_connection_test(config=config, secrets=secrets, message=message)
    test = PROVIDER_TESTS.get(provider)
    if test is None:
        return connection_fail("not_configured", "This kind of widget has no connection test.")
    return test(config=config, secrets=secrets, message=message)
