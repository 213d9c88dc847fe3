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

import ipaddress
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from licenses.domains import origin_normalize
from widgets.ui_events import ui_events_clean

logger = logging.getLogger(__name__)

MAX_REPLY_BYTES = 2_000_000


class N8nError(Exception):
    """A failed upstream call, already mapped to what the browser may learn."""

    def __init__(self, code: str, message: str, status: int):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _timeout_error() -> N8nError:
    return N8nError("upstream_timeout", "The assistant took too long to answer. Please try again.", 504)


def _upstream_error(detail: str) -> N8nError:
    # `detail` is for our logs only and never includes the URL.
    logger.warning("n8n upstream error: %s", detail)
    return N8nError("upstream_error", "The assistant is unavailable right now. Please try again.", 502)


@dataclass(frozen=True)
class N8nTarget:
    url: str
    auth: tuple[str, str] | None = None


@dataclass
class N8nReply:
    text: str
    ui: list[dict[str, Any]] = field(default_factory=list)


def n8n_target(*, config: dict[str, Any], secrets: dict[str, Any] | None) -> N8nTarget | None:
    """Where the config sends chat, with basic auth when enabled; None when not configured.

    The stored credentials are bound to the webhook origin they were saved with
    (`n8n_basic_auth_origin`, set by widgets.services.secrets_clean): a config that points the
    webhook anywhere else never carries them there, so nobody can read them back through a URL of
    their own."""
    n8n = config.get("connection", {}).get("n8n", {})
    url = (n8n.get("webhook_url") or "").strip()
    if not url:
        return None
    auth = None
    secrets = secrets or {}
    origin = origin_normalize(url)
    if n8n.get("basic_auth") and origin and secrets.get("n8n_basic_auth_origin") == origin:
        auth = (secrets.get("n8n_basic_auth_user") or "", secrets.get("n8n_basic_auth_password") or "")
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


def _client() -> httpx.Client:
    return httpx.Client(timeout=_timeout(), follow_redirects=False, headers={"Accept": "application/json"})


def _post_json(target: N8nTarget, payload: dict[str, Any]) -> Any:
    if not n8n_target_allowed(target.url):
        raise _forbidden_target()
    try:
        with _client() as client:
            response = client.post(target.url, json=payload, auth=target.auth)
    except httpx.TimeoutException:
        raise _timeout_error()
    except httpx.HTTPError as exc:
        raise _upstream_error(type(exc).__name__)
    if response.status_code >= 400:
        raise _upstream_error(f"status {response.status_code}")
    if len(response.content) > MAX_REPLY_BYTES:
        raise _upstream_error("reply too large")
    try:
        return response.json()
    except ValueError:
        # n8n's "Respond to Webhook" node may answer plain text; treat it as the output.
        text = response.text.strip()
        if text and "json" not in response.headers.get("content-type", ""):
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


def n8n_send(*, target: N8nTarget, session_id: str, chat_input: str, metadata: dict[str, Any]) -> N8nReply:
    payload = n8n_payload(action="sendMessage", session_id=session_id, chat_input=chat_input, metadata=metadata)
    return reply_parse(_post_json(target, payload))


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


def n8n_history(*, target: N8nTarget, session_id: str, metadata: dict[str, Any]) -> list[dict[str, str]]:
    payload = n8n_payload(action="loadPreviousSession", session_id=session_id, chat_input=None, metadata=metadata)
    return history_parse(_post_json(target, payload))


class N8nStream:
    """An open streaming reply. Construct (connects and checks the status, may raise N8nError), then
    iterate `events()` for normalised dicts: {"type": "item", "content"} ... then a final
    {"type": "end", "output", "ui"} or {"type": "error", "code", "message"}. Always `close()`."""

    def __init__(self, *, target: N8nTarget, session_id: str, chat_input: str, metadata: dict[str, Any]):
        self.deadline = time.monotonic() + settings.N8N_TOTAL_TIMEOUT
        self.text_parts: list[str] = []
        self.ui: list[dict[str, Any]] = []
        self.ok = False
        if not n8n_target_allowed(target.url):
            raise _forbidden_target()
        self._client = _client()
        payload = n8n_payload(action="sendMessage", session_id=session_id, chat_input=chat_input, metadata=metadata)
        request = self._client.build_request("POST", target.url, json=payload)
        try:
            self._response = self._client.send(request, stream=True, auth=target.auth)
        except httpx.TimeoutException:
            self._client.close()
            raise _timeout_error()
        except httpx.HTTPError as exc:
            self._client.close()
            raise _upstream_error(type(exc).__name__)
        if self._response.status_code >= 400:
            self.close()
            raise _upstream_error(f"status {self._response.status_code}")

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def close(self) -> None:
        try:
            if hasattr(self, "_response"):
                self._response.close()
        finally:
            self._client.close()

    def _line_event(self, line: str) -> dict[str, Any] | None:
        try:
            obj = json.loads(line)
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

    def events(self) -> Iterator[dict[str, Any]]:
        try:
            buffer = ""
            for chunk in self._response.iter_text():
                if time.monotonic() > self.deadline:
                    raise _timeout_error()
                buffer += chunk
                # n8n separates objects by newlines; some versions concatenate `}{` without one.
                buffer = buffer.replace("}{", "}\n{")
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    if line.strip():
                        event = self._line_event(line.strip())
                        if event:
                            yield event
            if buffer.strip():
                event = self._line_event(buffer.strip())
                if event:
                    yield event
            self.ok = True
            yield {"type": "end", "output": self.text, "ui": self.ui[:10]}
        except httpx.TimeoutException:
            error = _timeout_error()
            yield {"type": "error", "code": error.code, "message": error.message}
        except httpx.HTTPError as exc:
            error = _upstream_error(type(exc).__name__)
            yield {"type": "error", "code": error.code, "message": error.message}
        except N8nError as error:
            yield {"type": "error", "code": error.code, "message": error.message}
        finally:
            self.close()
