"""The event loop's lean Redis connection (licenses.redis.RespConnection), which carries the public chat's rate-limit
script on every turn (issue 11 bench): replies in order whatever is in flight or cancelled, AUTH and SELECT from
REDIS_URL, failures as redis-py's own errors (so the limiter's fallback is unchanged), a new connection after any
failure, redis-py kept for URLs it does not speak."""

from __future__ import annotations

import asyncio
import inspect

import pytest
import redis
from asgiref.sync import async_to_sync

from conftest import RedisServer
from licenses.redis import RespConnection, redis_reset, redis_resp_connection
from widgets import ratelimit


@pytest.fixture
def resp(settings, redis_server):
    settings.REDIS_URL = redis_server.url
    settings.REDIS_SOCKET_TIMEOUT = 2.0
    return redis_server


def run(function):
    """`function()` on an event loop of its own (awaited when it returns an awaitable)."""

    async def on_a_loop():
        result = function()
        return await result if inspect.isawaitable(result) else result

    return async_to_sync(on_a_loop)()


def test_calls_in_flight_together_each_get_their_own_replies_in_order(resp):
    resp.client().set("greeting", b"hello")

    async def main():
        connection = redis_resp_connection()
        calls = [
            connection.execute([("INCR", "n"), ("GET", "greeting"), ("GET", "missing")]),
            connection.execute([("INCRBY", "n", 10)]),
            connection.execute([("LPUSH", "greeting", "x"), ("INCR", "n")]),  # a reply error in its place
        ]
        return await asyncio.gather(*calls)

    first, second, third = run(main)
    assert first == [1, b"hello", None]
    assert second == [11]
    assert isinstance(third[0], redis.ResponseError) and str(third[0]).startswith("WRONGTYPE")
    assert third[1] == 12


def test_one_connection_serves_every_call_of_a_loop(resp):
    direct = resp.client()  # one connection of its own, reused for both counts
    before = int(direct.info("stats")["total_connections_received"])

    async def main():
        connection = redis_resp_connection()
        assert redis_resp_connection() is connection
        for _ in range(50):
            await connection.execute([("INCR", "n")])
        await asyncio.gather(*(connection.execute([("INCR", "n")]) for _ in range(50)))

    run(main)
    assert int(direct.info("stats")["total_connections_received"]) - before == 1
    assert int(direct.get("n")) == 100


def test_a_cancelled_call_leaves_the_next_call_its_own_replies(resp):
    resp.client().set("b", b"two")

    async def main():
        connection = redis_resp_connection()
        await connection.execute([("PING",)])  # connected
        cancelled = asyncio.ensure_future(connection.execute([("SET", "a", "one")]))
        await asyncio.sleep(0)  # written, its reply not read yet
        cancelled.cancel()
        return cancelled, await connection.execute([("GET", "b")])

    cancelled, replies = run(main)
    assert cancelled.cancelled()
    assert replies == [b"two"]  # not the cancelled call's OK
    assert resp.client().get("a") == b"one"  # the command itself was sent and done


def test_auth_and_select_come_from_the_url(settings):
    server = RedisServer(password="s3cr:et").start()
    try:
        settings.REDIS_URL = server.url.replace("/0", "/3")  # the password URL-quoted (s3cr%3Aet)
        run(lambda: redis_resp_connection().execute([("SET", "where", "db3")]))
        assert server.client(db=3).get("where") == b"db3"
        assert server.client(db=0).get("where") is None

        redis_reset()
        settings.REDIS_URL = f"redis://:wrong@127.0.0.1:{server.port}/3"
        with pytest.raises(redis.ConnectionError, match="WRONGPASS|invalid password"):
            run(lambda: redis_resp_connection().execute([("GET", "where")]))
    finally:
        server.stop()
        redis_reset()


def test_an_outage_is_a_connection_error_and_the_next_call_after_it_reconnects(resp):
    async def main():
        connection = redis_resp_connection()
        assert await connection.execute([("INCR", "n")]) == [1]
        resp.stop()
        with pytest.raises(redis.ConnectionError):
            await connection.execute([("INCR", "n")])
        with pytest.raises(redis.ConnectionError):  # refused while down
            await connection.execute([("INCR", "n")])
        await asyncio.to_thread(resp.start)  # the same port again (an empty server)
        return await connection.execute([("INCR", "n")])

    assert run(main) == [1]


def test_a_redis_that_does_not_answer_is_a_timeout_and_its_connection_is_replaced(settings):
    settings.REDIS_SOCKET_TIMEOUT = 0.3
    connections: list[int] = []

    async def fake_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        mute = len(connections) == 1  # the first connection is read and never answered
        while data := await reader.read(65536):
            if not mute:
                writer.write(b":7\r\n" * data.count(b"*"))  # one integer per command (no '*' in these arguments)
        writer.close()

    async def main():
        server = await asyncio.start_server(fake_redis, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = RespConnection(host="127.0.0.1", port=port, db=0, username=None, password=None)
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises(redis.TimeoutError):
                await connection.execute([("INCR", "n")])
            waited = asyncio.get_running_loop().time() - started
            assert await connection.execute([("INCR", "n"), ("INCR", "m")]) == [7, 7]
            return waited
        finally:
            connection.close()
            server.close()

    waited = run(main)
    assert 0.25 <= waited < 2
    assert connections == [1, 2]


def test_a_reply_redis_could_not_have_sent_closes_the_connection(settings):
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"?not resp\r\n")
        await writer.drain()
        await reader.read(65536)

    async def main():
        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = RespConnection(host="127.0.0.1", port=port, db=0, username=None, password=None)
        try:
            with pytest.raises(redis.ConnectionError, match="Protocol error"):
                await connection.execute([("PING",)])
        finally:
            connection.close()
            server.close()

    run(main)


@pytest.mark.parametrize(
    "url", ["rediss://127.0.0.1:6379/0", "unix:///tmp/redis.sock?db=2", "redis://127.0.0.1:6379/0"]
)
def test_only_plain_tcp_urls_take_the_lean_connection(settings, url):
    settings.REDIS_URL = url
    connection = run(redis_resp_connection)
    assert (connection is not None) == url.startswith("redis://")
    redis_reset()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py"])
def test_the_rate_limit_script_counts_the_same_on_either_connection(redis_limiter, monkeypatch, frozen_minute, lean):
    """Each hit counted once, stopping at the first counter over its limit, the peeked value as stored, the
    script loaded again after SCRIPT FLUSH (NOSCRIPT): on the lean connection and on redis-py's pipeline (the
    one a rediss:// or unix:// REDIS_URL uses)."""
    from django.core.cache import cache

    if not lean:
        monkeypatch.setattr(ratelimit, "redis_resp_connection", lambda: None)
    direct = redis_limiter.client()
    direct.set(cache.make_and_validate_key("peeked"), b"generation-3")
    checks = (("lean:visitor", 2), ("lean:license", 100))

    async def hits(count):
        return await asyncio.gather(*(ratelimit.rate_hits_peek_async(checks, peek="peeked") for _ in range(count)))

    first = async_to_sync(hits)(3)
    direct.script_flush()
    second = async_to_sync(hits)(1)
    assert [wait is not None for wait, _ in first + second] == [False, False, True, True]
    assert all(peeked == b"generation-3" for _, peeked in first + second)
    (visitor,) = direct.keys("sb:rate:lean:visitor:*")
    (license,) = direct.keys("sb:rate:lean:license:*")
    assert int(direct.get(visitor)) == 4 and int(direct.get(license)) == 2
    assert not ratelimit.limiter.degraded
