"""A fake OpenAI HTTP server: real HTTP on 127.0.0.1, a free port, a thread.

`POST /v1/responses` (what the Agents SDK calls for our ChatKit server) streams the Responses API
SSE events the SDK consumes: `event: <type>` + `data: <json>` frames with `type` and
`sequence_number`, a unique `msg_` id per answer, usage in `response.completed`. A turn is either a
function call (when a queued step or a trigger word in the last user message asks for one and the
input holds no `function_call_output` yet) or a text answer streamed in `chunks` deltas,
`chunk_delay` apart.

`POST /v1/chatkit/sessions` (hosted Agent Builder sessions, retired) still answers as OpenAI did, so
a test can prove that nothing calls it any more.

Every request is recorded (method, path, headers, JSON body); `mode` makes it answer
ok, 401, 404, 429, 500 or slow (sleeps `delay` first). Used by the tests (fixture `fake_openai`) and
by bench/chatkit_server.py.
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

ERROR_BODIES_RESPONSES = {
    401: {
        "error": {
            "message": "Incorrect API key provided: sk-tena****1234.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    },
    404: {
        "error": {
            "message": "The model `gpt-x` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    },
    429: {
        "error": {
            "message": "Rate limit reached for requests.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    },
    500: {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    },
}
USAGE = {
    "input_tokens": 50,
    "input_tokens_details": {"cached_tokens": 10},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 57,
}
ERROR_BODIES = {
    401: {
        "error": {
            "message": "Incorrect API key provided: sk-tena****1234.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    },
    404: {
        "error": {
            "message": "Workflow with id 'wf_SECRETWORKFLOW' not found.",
            "type": "invalid_request_error",
            "code": "not_found",
        }
    },
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
    # /v1/responses behaviour
    steps: list[dict[str, Any]] = field(default_factory=list)  # {"text": ...} or {"call": name, "arguments": {}}
    triggers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # word -> (tool, arguments)
    reply: str = "Hello! How can I help you today?"
    chunks: int = 3
    chunk_delay: float = 0.0
    message_ids: list[str] = field(default_factory=list)
    fail_follow_up: int = 0  # answer this status to requests that carry a tool's output
    lock: threading.Lock = field(default_factory=threading.Lock)

    def responses(self) -> list[Recorded]:
        return [r for r in list(self.requests) if r.path == "/v1/responses"]

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

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                """`GET /v1/models/<id>` (the configurator's connection test), with the same modes."""
                fake.requests.append(Recorded("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None))
                if fake.mode == "slow" or fake.delay:
                    time.sleep(fake.delay or 2.0)
                if not self.path.startswith("/v1/models/"):
                    return self._send(404, {"error": {"message": "Unknown path", "type": "invalid_request_error"}})
                status = {"401": 401, "404": 404, "429": 429, "500": 500}.get(fake.mode, 200)
                if status != 200:
                    return self._send(status, ERROR_BODIES_RESPONSES[status])
                model = self.path.removeprefix("/v1/models/")
                self._send(200, {"id": model, "object": "model", "created": 1764547200, "owned_by": "openai"})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode(errors="replace")
                generation, mode, delay = fake.generation, fake.mode, fake.delay
                fake.requests.append(Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if mode == "slow" or delay:
                    time.sleep(delay or 2.0)
                if self.path == "/v1/responses":
                    if generation != fake.generation:
                        # A slow answer from an earlier test: it must not take this test's scripted steps.
                        return self._send(500, ERROR_BODIES_RESPONSES[500])
                    status = {"401": 401, "404": 404, "429": 429, "500": 500}.get(mode, 200)
                    if fake.fail_follow_up and _answers_a_call(body):
                        status = fake.fail_follow_up
                    if status != 200:
                        return self._send(status, ERROR_BODIES_RESPONSES[status])
                    return self._stream(
                        fake._turn(body if isinstance(body, dict) else {}), body if isinstance(body, dict) else {}
                    )
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
                self._send(
                    200,
                    {
                        "id": "cksess_" + secrets.token_hex(8),
                        "object": "chatkit.session",
                        "client_secret": secret,
                        "expires_at": now + seconds,
                        "max_requests_per_1_minute": (body or {})
                        .get("rate_limits", {})
                        .get("max_requests_per_1_minute", 10),
                        "status": "active",
                        "user": (body or {}).get("user"),
                        "workflow": {"id": (body or {}).get("workflow", {}).get("id"), "version": None},
                    },
                )

            def _stream(self, step: dict[str, Any], body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for frame in fake._events(step, body):
                        self.wfile.write(frame)
                        self.wfile.flush()
                        if frame.startswith(b"event: response.output_text.delta") and fake.chunk_delay:
                            time.sleep(fake.chunk_delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a visitor who closed the tab)

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

    # --- the Responses API ---------------------------------------------------------------------

    def _turn(self, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("input") if isinstance(body.get("input"), list) else []
        answered = _answers_a_call(body)
        with self.lock:
            if self.steps:
                return self.steps.pop(0)
        if not answered:
            text = _last_user_text(items).lower()
            for word, (tool, arguments) in self.triggers.items():
                if word in text:
                    return {"call": tool, "arguments": arguments}
        return {"text": self.reply}

    def _events(self, step: dict[str, Any], body: dict[str, Any]):
        seq = iter(range(10_000))
        response_id = "resp_" + secrets.token_hex(12)
        model = body.get("model") or "gpt-x"

        def frame(kind: str, **data: Any) -> bytes:
            payload = {"type": kind, "sequence_number": next(seq), **data}
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

        def response(status: str, output: list[Any], usage: Any = None) -> dict[str, Any]:
            return {
                "id": response_id,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": usage,
            }

        yield frame("response.created", response=response("in_progress", []))
        if "call" in step:
            arguments = json.dumps(step.get("arguments") or {})
            call_id = "call_" + secrets.token_hex(8)
            item = {
                "type": "function_call",
                "id": "fc_" + secrets.token_hex(8),
                "call_id": call_id,
                "name": step["call"],
                "arguments": "",
                "status": "in_progress",
            }
            yield frame("response.output_item.added", output_index=0, item=item)
            yield frame("response.function_call_arguments.delta", item_id=item["id"], output_index=0, delta=arguments)
            yield frame(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=0,
                name=step["call"],
                arguments=arguments,
            )
            done = {**item, "arguments": arguments, "status": "completed"}
            yield frame("response.output_item.done", output_index=0, item=done)
            yield frame("response.completed", response=response("completed", [done], USAGE))
            return
        text = step["text"]
        message_id = "msg_" + secrets.token_hex(12)
        with self.lock:
            self.message_ids.append(message_id)
        ids = {"item_id": message_id, "output_index": 0, "content_index": 0}
        message = {"type": "message", "id": message_id, "role": "assistant", "status": "in_progress", "content": []}
        yield frame("response.output_item.added", output_index=0, item=message)
        yield frame("response.content_part.added", **ids, part={"type": "output_text", "text": "", "annotations": []})
        size = max(1, -(-len(text) // max(1, self.chunks)))
        for start in range(0, len(text), size):
            yield frame("response.output_text.delta", **ids, delta=text[start : start + size], logprobs=[])
        yield frame("response.output_text.done", **ids, text=text, logprobs=[])
        part = {"type": "output_text", "text": text, "annotations": []}
        yield frame("response.content_part.done", **ids, part=part)
        done = {**message, "status": "completed", "content": [part]}
        yield frame("response.output_item.done", output_index=0, item=done)
        yield frame("response.completed", response=response("completed", [done], USAGE))

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def reset(self, mode: str = "ok", delay: float = 0.0) -> None:
        self.generation += 1
        self.mode, self.delay = mode, delay
        self.requests.clear()
        self.issued.clear()
        self.steps.clear()
        self.triggers.clear()
        self.message_ids.clear()
        self.reply, self.chunks, self.chunk_delay = "Hello! How can I help you today?", 3, 0.0
        self.fail_follow_up = 0


def _answers_a_call(body: Any) -> bool:
    items = body.get("input") if isinstance(body, dict) and isinstance(body.get("input"), list) else []
    return any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)


def _last_user_text(items: list[Any]) -> str:
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return ""
