"""bench/chat_proxy.py's visitor client (`RawVisitor`, the default): each visitor keeps one connection per server,
reads a plain or a chunked (streamed) answer to its last byte, opens a new connection when the server closed one
or the run moves to another server, and never reuses a connection whose answer it did not read to the end."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench.chat_proxy import RawVisitor


class _Server:
    """A loopback HTTP/1.1 server answering from a script: per request, (status, body chunks, close after)."""

    def __init__(self, script: list[tuple[int, list[bytes], bool]]) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[tuple[str, bytes]] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.script:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                             .split(b":")[1])  # fmt: skip
                body = await reader.readexactly(length)
                self.requests.append((head.split(b" ")[1].decode(), body))
                status, chunks, close = self.script.pop(0)
                if status == 0:  # hang up mid-answer
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                    await writer.drain()
                    return
                extra = b"Connection: close\r\n" if close else b""
                if len(chunks) == 1:
                    head = b"HTTP/1.1 %d X\r\n%sContent-Length: %d\r\n\r\n" % (status, extra, len(chunks[0]))
                    writer.write(head + chunks[0])
                else:
                    writer.write(b"HTTP/1.1 %d X\r\n%sTransfer-Encoding: chunked\r\n\r\n" % (status, extra))
                    for chunk in chunks:  # each in its own write, as a streamed reply comes
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        await writer.drain()
                        await asyncio.sleep(0)
                    writer.write(b"0\r\n\r\n")
                await writer.drain()
                if close:
                    return
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


def run(coro):
    return asyncio.run(coro)


def test_plain_and_streamed_answers_are_read_whole_on_one_kept_connection():
    async def main():
        streamed = [b'{"type":"item"}\n', b'{"type":"end"}\n']
        server = _Server([(200, [b'{"output":"hi"}'], False), (200, streamed, False)])
        url = await server.start()
        visitor = RawVisitor(timeout=5)
        first = await visitor(f"{url}/chat?widget=w", {"chatInput": "one"}, {"Origin": "https://a.example"})
        second = await visitor(f"{url}/chat?widget=w", {"chatInput": "two"}, {})
        await visitor.aclose()
        server.server.close()
        return server, first, second

    server, first, second = run(main())
    assert first == (200, b'{"output":"hi"}')
    assert second == (200, b'{"type":"item"}\n{"type":"end"}\n')
    assert server.connections == 1
    assert [(path, json.loads(body)["chatInput"]) for path, body in server.requests] == [
        ("/chat?widget=w", "one"),
        ("/chat?widget=w", "two"),
    ]


def test_a_closed_connection_or_another_server_gets_a_new_connection():
    async def main():
        one = _Server([(429, [b'{"error":"rate_limited"}'], True), (200, [b"{}"], False)])
        other = _Server([(200, [b"{}"], False)])
        url_one, url_other = await one.start(), await other.start()
        visitor = RawVisitor(timeout=5)
        results = [await visitor(f"{url_one}/a", {}, {}), await visitor(f"{url_one}/a", {}, {})]
        results.append(await visitor(f"{url_other}/b", {}, {}))
        await visitor.aclose()
        return one, other, results

    one, other, results = run(main())
    assert results == [(429, b'{"error":"rate_limited"}'), (200, b"{}"), (200, b"{}")]
    assert (one.connections, other.connections) == (2, 1)


def test_an_answer_cut_short_is_an_error_and_its_connection_is_not_reused():
    async def main():
        server = _Server([(0, [], False), (200, [b"{}"], False)])
        url = await server.start()
        visitor = RawVisitor(timeout=5)
        with pytest.raises(ConnectionError):
            await visitor(f"{url}/a", {}, {})
        again = await visitor(f"{url}/a", {}, {})
        await visitor.aclose()
        return server, again

    server, again = run(main())
    assert again == (200, b"{}") and server.connections == 2


def _row(ratio: float, direct_p99: float, proxy_p99: float, floor_p99: float) -> dict:
    return {
        "ratio": ratio,
        "added_p99_ms": round(proxy_p99 - direct_p99, 1),
        "direct": {"p99_ms": direct_p99},
        "floor": {"p99_ms": floor_p99},
    }


def test_the_goal_verdict_needs_both_the_ratio_and_the_added_p99_and_names_the_floor():
    from bench.chat_proxy import goal_verdicts

    results = {
        "plain": _row(0.86, 260.0, 280.5, 290.0),  # burst: +20.5 ms, just over
        "stream": _row(0.79, 260.0, 270.0, 250.0),  # burst: ratio just under
        "spread": {"plain": _row(0.8, 251.0, 271.0, 253.0), "stream": _row(0.97, 255.0, 250.0, 254.0)},
    }
    verdicts, lines = goal_verdicts(results)
    assert {k: v["met"] for k, v in verdicts.items()} == {
        "burst plain": False,
        "burst stream": False,
        "spread plain": True,  # exactly 0.8x and exactly +20 ms are inside the goal
        "spread stream": True,
    }
    assert verdicts["burst plain"]["floor_added_p99_ms"] == 30.0
    assert verdicts["burst stream"]["floor_added_p99_ms"] == -10.0
    assert lines[0] == (
        "goal (>= 0.8x, <= 20 ms added p99), burst plain: NOT met (ratio 0.86, +20.5 ms; the bare floor +30.0 ms)"
    )
    assert lines[3].endswith("spread stream: met (ratio 0.97, -5.0 ms; the bare floor -1.0 ms)")
    # A run of one pattern only (--arrivals spread) has verdicts for that pattern only.
    assert set(goal_verdicts({"spread": results["spread"]})[0]) == {"spread plain", "spread stream"}


def test_profile_samples_go_to_the_first_bucket_they_match():
    from bench.profile_buckets import buckets

    profile = [
        "run (uvicorn/main.py:1);_GroupCommit._commit (widgets/chat.py:9);AsyncConnection.wait (psycopg/x.py:2) 3",
        "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:544) 2",
        "N8nStream.batches (widgets/n8n.py:5);StreamReader.readany (aiohttp/streams.py:473) 4",
        "Runner.run (asyncio/runners.py:118) 1",
        "",
    ]
    shares, frames, total = buckets(profile)
    assert total == 10
    assert shares == {"group commit": 3, "visitor writes (Uvicorn send)": 2, "upstream reads": 4, "other": 1}
    assert frames["upstream reads"] == {"StreamReader.readany (aiohttp/streams.py:473)": 4}
