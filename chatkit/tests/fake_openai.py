"""A fake OpenAI HTTP server for ChatKit sessions: real HTTP on 127.0.0.1, a free port, a thread.

It records every request (method, path, headers, JSON body) and answers per `mode`:
ok (200 with a chatkit.session object), 401, 404, 429, 500, or slow (sleeps `delay` first).
Used by the tests (fixture `fake_openai`) and by bench/chatkit_sessions.py.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_BODIES = {
    401: {"error": {"message": "Incorrect API key provided: sk-tena****1234.", "type": "invalid_request_error",
                    "code": "invalid_api_key"}},
    404: {"error": {"message": "Workflow with id 'wf_SECRETWORKFLOW' not found.", "type": "invalid_request_error",
                    "code": "not_found"}},
    429: {"error": {"message": "Rate limit reached.", "type": "rate_limit_error", "code": "rate_limit_exceeded"}},
    500: {"error": {"message": "The server had an error.", "type": "server_error", "code": None}},
}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeOpenAI:
    mode: str = "ok"
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # client secrets handed out
    generation: int = 0  # bumped by reset(): a slow answer from an earlier test must not count in this one
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes: without this, Nagle + delayed ACK
                # add ~40 ms to every answer on loopback.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode(errors="replace")
                generation, mode, delay = fake.generation, fake.mode, fake.delay
                fake.requests.append(Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                              body))
                if mode == "slow" or delay:
                    time.sleep(delay or 2.0)
                if self.path != "/v1/chatkit/sessions":
                    return self._send(404, {"error": {"message": "Unknown path", "type": "invalid_request_error"}})
                status = {"401": 401, "404": 404, "429": 429, "500": 500}.get(mode, 200)
                if status != 200:
                    return self._send(status, ERROR_BODIES[status])
                now = int(time.time())
                secret = "ek_fake_" + secrets.token_hex(12)
                if generation == fake.generation:
                    fake.issued.append(secret)
                seconds = (body or {}).get("expires_after", {}).get("seconds", 600)
                self._send(200, {
                    "id": "cksess_" + secrets.token_hex(8),
                    "object": "chatkit.session",
                    "client_secret": secret,
                    "expires_at": now + seconds,
                    "max_requests_per_1_minute": (body or {}).get("rate_limits", {}).get("max_requests_per_1_minute",
                                                                                          10),
                    "status": "active",
                    "user": (body or {}).get("user"),
                    "workflow": {"id": (body or {}).get("workflow", {}).get("id"), "version": None},
                })

            def _send(self, status: int, data: dict[str, Any]) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        ThreadingHTTPServer.request_queue_size = 128  # the default 5 drops SYNs under concurrent load
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def reset(self, mode: str = "ok", delay: float = 0.0) -> None:
        self.generation += 1
        self.mode, self.delay = mode, delay
        self.requests.clear()
        self.issued.clear()
