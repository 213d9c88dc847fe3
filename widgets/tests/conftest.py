"""Fixtures of the public embed tests: a fake n8n server (real HTTP on 127.0.0.1), published widgets
wired to it, and the browser helpers (Playwright + Debian Chromium, a host page on another origin)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from widgets.tests.factories import n8n_config, publish  # noqa: F401 (this package's tests import them from here)

ORIGIN = "https://shop.example.com"
N8N_PASSWORD = "n8n-pass-SECRET-4242"
N8N_USER = "n8n-user"
OPENAI_KEY = "sk-test-SECRET-openai-9999"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeN8n:
    """Scriptable n8n Chat Trigger. `replies` is consumed in order; `default` answers the rest.

    A reply is a dict: {"json": obj, "status": 200} | {"stream": [obj, ...], "delay": s}
    | {"sleep": s} | {"raw": "text" or b"bytes", "status": 500, "content_type": "text/plain"}
    | {"chunks": [bytes, ...], "delay": s} (a stream's bytes as they are, one HTTP chunk each); a stream may hold
    all but its first piece until "gate" (a threading.Event) is set; any of them may add "headers": [(name, value),
    ...] to the answer's headers.
    """

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    default: dict[str, Any] = field(default_factory=lambda: {"json": {"output": "Hello from n8n"}})
    # loadPreviousSession is answered from here (not from `replies`), so scripts stay about sendMessage.
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def webhook(self) -> str:
        return self.url + "/webhook/secret-hook-7f3a/chat"

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Bodies of the sendMessage requests (the widget also asks for history on open)."""
        return [r.body for r in self.requests if isinstance(r.body, dict) and r.body.get("action") == "sendMessage"]

    def reply(self, **kwargs: Any) -> None:
        self.replies.append(kwargs)

    def next_reply(self) -> dict[str, Any]:
        return self.replies.pop(0) if self.replies else self.default


def _handler(fake: FakeN8n) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            fake.requests.append(Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if isinstance(body, dict) and body.get("action") == "loadPreviousSession":
                spec = {"json": {"data": fake.history}}
            else:
                spec = fake.next_reply()
            try:
                if "sleep" in spec:
                    time.sleep(spec["sleep"])
                    spec = {"json": {"output": "too late"}}
                if "stream" in spec or "chunks" in spec:
                    self.send_response(spec.get("status", 200))
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Transfer-Encoding", "chunked")
                    for name, value in spec.get("headers", ()):
                        self.send_header(name, value)
                    self.end_headers()
                    pieces = spec.get("chunks") or [(json.dumps(obj) + "\n").encode() for obj in spec["stream"]]
                    for index, piece in enumerate(pieces):
                        if index == 1 and "gate" in spec:  # the rest waits for the test (a threading.Event)
                            spec["gate"].wait(10)
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        self.wfile.flush()
                        time.sleep(spec.get("delay", 0))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if "raw" in spec:
                    data = spec["raw"] if isinstance(spec["raw"], bytes) else spec["raw"].encode()
                    ctype = spec.get("content_type", "text/plain")
                else:
                    data = json.dumps(spec["json"]).encode()
                    ctype = "application/json"
                self.send_response(spec.get("status", 200))
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for name, value in spec.get("headers", ()):
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@pytest.fixture
def fake_n8n():
    fake = FakeN8n()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def n8n_widget(widget_a, owner, fake_n8n):
    """Widget A, published, wired to the fake n8n, with secrets set (that must never leak)."""
    return publish(
        widget_a,
        owner,
        config=n8n_config(fake_n8n.webhook),
        secrets={
            "n8n_basic_auth_user": N8N_USER,
            "n8n_basic_auth_password": N8N_PASSWORD,
            "openai_api_key": OPENAI_KEY,
        },
    )


# --- browser -------------------------------------------------------------------------------


def product_cards_payload(title: str = "Pixel 7") -> dict[str, Any]:
    """A message payload holding one product card, as the tools store it (`ui.product_cards`)."""
    product = {
        "id": "1",
        "title": title,
        "description": "",
        "price": "449.00",
        "currency": "USD",
        "image_url": "",
        "url": "https://shop.example.com/p7",
        "in_stock": True,
    }
    return {"ui": [{"type": "ui.product_cards", "products": [product]}]}


def chat_turn(widget: Any, session: str, text: str, conversation_id: int | None = None, **extra: Any) -> dict[str, Any]:
    """One answered chat turn as `widgets.services.turns.chat_turn_record` takes it (for the group-commit tests)."""
    return {
        "widget": widget,
        "session_id": session,
        "visitor_id": "v-1",
        "user_text": text,
        "reply_text": f"re: {text}",
        "ui": [],
        "latency_ms": 12,
        "conversation_id": conversation_id,
        "page_url": "",
        "identity": {},
        **extra,
    }


def mixed_batch(widget: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    """Two continuing sessions (c0, c1: their conversations, created here) and two new ones (n0, n1), interleaved:
    (the conversations, the batch's four turns)."""
    from widgets.models import Channel, Conversation

    going = [Conversation.objects.create(widget=widget, channel=Channel.CHAT, session_id=f"c{i}") for i in (0, 1)]
    batch = [
        chat_turn(widget, "c0", "one", going[0].pk),
        chat_turn(widget, "n0", "two"),
        chat_turn(widget, "c1", "three", going[1].pk),
        chat_turn(widget, "n1", "four"),
    ]
    return going, batch


@pytest.fixture
def db_steps(monkeypatch) -> list[int]:
    """The sizes of the batches the chat's group commit hands to `chat_turns_record` (a DB step each), in order."""
    from widgets import chat as chat_module

    sizes: list[int] = []
    real = chat_module.chat_turns_record

    def counted(turns):
        sizes.append(len(turns))
        return real(turns)

    monkeypatch.setattr(chat_module, "chat_turns_record", counted)
    return sizes


def record_batch(batch: list[dict[str, Any]]) -> list[Any]:
    """One group-commit batch exactly as given (`widgets.chat._batch_record`), on an event loop of its own (whose
    PostgreSQL pool closes with it)."""
    from asgiref.sync import async_to_sync

    from widgets import chat as chat_module
    from widgets.aio import pg_async_close

    async def run() -> list[Any]:
        try:
            return await chat_module._batch_record(batch)
        finally:
            await pg_async_close()

    return async_to_sync(run)()


@pytest.fixture
def pipelines(monkeypatch) -> list[int]:
    """The sizes of the rate limiter's Redis pipelines sent (`widgets.ratelimit._pipeline`), in order."""
    from widgets import ratelimit

    sizes: list[int] = []
    real = ratelimit._pipeline

    async def counted(hits):
        sizes.append(len(hits))
        return await real(hits)

    monkeypatch.setattr(ratelimit, "_pipeline", counted)
    return sizes


def run_in_threads(target: Any, count: int) -> None:
    """Run `target(n)` for n in range(count), each in a thread of its own, all started before any is joined (the
    race tests: each thread meets the others at a barrier of its own making, then writes)."""
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
