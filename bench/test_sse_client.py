"""bench/sse_client.py: what it counts is what the server sent (chunked or not, markers split across chunks and
reads), a refusal or a dropped connection is an error, and the closed loop keeps exactly `concurrency` in flight."""

from __future__ import annotations

import socketserver
import threading

import pytest

from bench.sse_client import SSEError, request, run_closed_loop

MARKER = b'"text_delta"'
FRAMES = [b'data: {"type": "thread.created"}\n\n'] + [
    b'data: {"type": "text_delta", "i": %d}\n\n' % i for i in range(3)
]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        with server.lock:
            server.live += 1
            server.most = max(server.most, server.live)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                data += self.request.recv(65536)
            path = data.split(b" ", 2)[1]
            if path == b"/refuse":
                self.request.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n")
                return
            if path == b"/drop":
                return
            if path == b"/chunked":
                self.request.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                body = b"".join(FRAMES)
                # Chunks that cut markers in two, sent in writes that cut chunk headers in two.
                wire = b"".join(
                    b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
                )
                wire += b"0\r\n\r\n"
                for i in range(0, len(wire), 5):
                    self.request.sendall(wire[i : i + 5])
                return
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
            for frame in FRAMES:
                self.request.sendall(frame)
        finally:
            with server.lock:
                server.live -= 1


@pytest.fixture
def server():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock, srv.live, srv.most = threading.Lock(), 0, 0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _make(server, path: str):
    url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    return lambda i: request(url, b'{"i": %d}' % i, headers={"X-Test": str(i)}, marker=MARKER)


@pytest.mark.parametrize("path", ["/plain", "/chunked"])
def test_it_counts_every_marker_once_and_times_them_in_order(server, path):
    results = run_closed_loop(_make(server, path), 3, measured=12)
    assert len(results) == 12
    for r in results:
        assert len(r.deltas) == 3
        assert 0 < r.first_byte <= r.first_token == r.deltas[0] <= r.deltas[-1]


def test_the_closed_loop_keeps_concurrency_in_flight_and_a_burst_measures_one_wave(server):
    run_closed_loop(_make(server, "/plain"), 4, measured=20, ramp=0.05)
    assert server.most <= 4
    burst = run_closed_loop(_make(server, "/plain"), 6, first_wave=True)
    assert len(burst) == 6


@pytest.mark.parametrize("path", ["/refuse", "/drop"])
def test_a_refusal_or_a_dropped_connection_is_an_error(server, path):
    with pytest.raises(SSEError):
        run_closed_loop(_make(server, path), 2, measured=2)
