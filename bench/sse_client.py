"""A load client for streamed (SSE) HTTP answers whose own cost hardly shows in what it measures.

The benches' first clients were 50 Python threads with httpx in one process: every request built, every
chunk parsed and every timestamp taken had to win one GIL first, so the client measured itself. At 50
concurrent conversations the fake Responses API — which answers in well under a millisecond — showed a first
byte p50 anywhere from 17 to 112 ms from run to run, and creating the 50 `httpx.Client`s (an SSL context
each) spread the "50 concurrent" first requests over 0.5–1.3 s of the timed window (bench/README-chatkit.md).

This client is one thread on one `selectors` loop (epoll) with prebuilt request bytes: per conversation it
connects, writes its request once and timestamps every read as it lands; nothing is parsed beyond the status
line, the headers and (when the server chunks) the chunk sizes. Every request says `Connection: close`, so
every path pays for a new connection the same way (the fake closes after each stream anyway) and the end of
an answer is the server closing it.

    run_closed_loop(make, concurrency, measured=N, ramp=seconds) -> [Result, ...]

`concurrency` conversations in flight at any time (a closed loop: each slot starts its next conversation as
soon as its last one ends); the slots start spread over `ramp` seconds, and only conversations started once
every slot runs are measured. A non-200 answer or a connection error raises `SSEError`.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class SSEError(Exception):
    pass


@dataclass(frozen=True)
class Request:
    host: str
    port: int
    data: bytes  # the whole HTTP/1.1 request
    marker: bytes  # counted in the body: one per streamed event that carries a text delta


def request(url: str, body: bytes, *, headers: dict[str, str], marker: bytes) -> Request:
    """A POST of `body` (JSON) to `url` with `headers`, as the bytes sent on the wire."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return Request(host, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, marker)


@dataclass
class Result:
    start: float  # perf_counter() when the connection was opened
    first_byte: float = 0.0  # ms after `start`: the first body byte read
    first_token: float = 0.0  # ms after `start`: the first read that completed a marker
    deltas: list[float] = field(default_factory=list)  # ms after `start`, one per marker


class _Conversation:
    def __init__(self, req: Request) -> None:
        self.req = req
        self.result = Result(start=time.perf_counter())
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.sock.connect_ex((req.host, req.port))
        self.out = memoryview(req.data)
        self.head = b""  # until the end of the headers
        self.chunked: bool | None = None
        self.pending = b""  # chunked: bytes not yet de-chunked
        self.left = 0  # chunked: bytes left in the current chunk
        self.body = b""  # the de-chunked body so far
        self.scanned = 0  # markers are searched from here

    def write(self) -> bool:
        """True once the whole request is sent."""
        sent = self.sock.send(self.out)
        self.out = self.out[sent:]
        return not self.out

    def read(self, data: bytes, now: float) -> None:
        if self.chunked is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].decode("latin-1"), self.head[end + 4 :]
            status = head.split("\r\n", 1)[0].split(" ")
            if len(status) < 2 or status[1] != "200":
                raise SSEError(f"{head.splitlines()[0]!r} from {self.req.host}:{self.req.port}")
            self.chunked = "transfer-encoding: chunked" in head.lower()
        if not data:
            return
        ms = (now - self.result.start) * 1000
        self.result.first_byte = self.result.first_byte or ms
        if self.chunked:
            self.pending += data
            self._dechunk()
        else:
            self.body += data
        while (found := self.body.find(self.req.marker, self.scanned)) >= 0:
            self.result.deltas.append(ms)
            self.result.first_token = self.result.first_token or ms
            self.scanned = found + len(self.req.marker)

    def _dechunk(self) -> None:
        while self.pending:
            if self.left:
                take = self.pending[: self.left]
                self.body += take
                self.left -= len(take)
                self.pending = self.pending[len(take) :]
                if self.left:
                    return
                continue
            if self.pending.startswith(b"\r\n"):  # the CRLF after a chunk's data
                self.pending = self.pending[2:]
                continue
            line_end = self.pending.find(b"\r\n")
            if line_end < 0:
                return
            self.left = int(self.pending[:line_end].split(b";", 1)[0], 16)
            self.pending = self.pending[line_end + 2 :]
            if self.left == 0:
                self.pending = b""
                return


def run_closed_loop(
    make: Callable[[int], Request],
    concurrency: int,
    *,
    measured: int = 0,
    ramp: float = 0.0,
    first_wave: bool = False,
    timeout: float = 300.0,
) -> list[Result]:
    """A closed loop of `concurrency` conversations (`make(i)` -> the i-th Request): each slot starts its next
    conversation as soon as its last one ends. The slots start `ramp / concurrency` s apart (0: all at once);
    the Results of the `measured` conversations started after the ramp (all slots running) are returned, in
    the order they started; the loop then stops starting conversations and lets the open ones finish.
    `first_wave`: only the first `concurrency` conversations, all started at once (a burst), are run and measured."""
    selector = selectors.DefaultSelector()
    results: list[Result] = []
    started = live = 0
    began = time.perf_counter()
    ramp_end = began + ramp
    deadline = began + timeout

    def start() -> None:
        nonlocal started, live
        conversation = _Conversation(make(started))
        if first_wave or (conversation.result.start >= ramp_end and slots == concurrency):
            results.append(conversation.result)
        selector.register(conversation.sock, selectors.EVENT_WRITE, conversation)
        started += 1
        live += 1

    slots = 0
    try:
        while slots < concurrency or live:
            now = time.perf_counter()
            if now > deadline:
                raise SSEError(f"{live} conversations still open after {timeout:.0f} s")
            while slots < concurrency and now >= began + ramp * slots / concurrency:
                slots += 1
                start()
            wait = max(0.0, began + ramp * slots / concurrency - now) if slots < concurrency else 1.0
            for key, mask in selector.select(timeout=wait):
                conversation = key.data
                if mask & selectors.EVENT_WRITE:
                    try:
                        done = conversation.write()
                    except OSError as exc:
                        raise SSEError(f"{exc} ({conversation.req.host}:{conversation.req.port})") from exc
                    if done:
                        selector.modify(conversation.sock, selectors.EVENT_READ, conversation)
                    continue
                try:
                    data = conversation.sock.recv(262144)
                except OSError as exc:
                    raise SSEError(f"{exc} ({conversation.req.host}:{conversation.req.port})") from exc
                if data:
                    conversation.read(data, time.perf_counter())
                    continue
                selector.unregister(conversation.sock)
                conversation.sock.close()
                live -= 1
                if conversation.chunked is None:
                    raise SSEError(f"the connection closed before an answer ({conversation.req.port})")
                if not first_wave and len(results) < measured:
                    start()
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        selector.close()
    return results
