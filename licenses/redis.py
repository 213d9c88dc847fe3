"""One Redis connection pool per process, shared by the Django cache, the chat rate limiter, the
voice slots (through the cache) and the health check.

Django's Redis cache builds a new client, and so a new pool, for every cache object; under ASGI
every request context gets its own cache object, so each request opened a new TCP connection
(issue 11.10: 400 requests -> 429 connections). Here the pool is module level, keyed by URL,
recreated after a fork, and bounded (a caller waits up to REDIS_POOL_TIMEOUT for a free connection
instead of opening the 1001st). Short socket timeouts make an outage fail fast.

The public chat's rate-limit script, on every turn, goes instead over a lean connection of the event loop's own
(`RespConnection`, `redis_resp_connection`): redis.asyncio's pipeline cost ~4x its CPU per round trip.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import weakref
from typing import Any

import hiredis
import redis
import redis.asyncio
import redis.connection
from django.conf import settings

_lock = threading.Lock()
_pools: dict[str, redis.ConnectionPool] = {}
_pid = os.getpid()


def _options() -> dict[str, Any]:
    return {
        "max_connections": settings.REDIS_MAX_CONNECTIONS,
        "timeout": settings.REDIS_POOL_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "health_check_interval": 30,
        "retry_on_timeout": False,
    }


def redis_pool(url: str | None = None, **options: Any) -> redis.ConnectionPool:
    """The process's pool for `url` (default REDIS_URL). Extra options apply only when it is created."""
    global _pid
    url = url or settings.REDIS_URL
    if not url:
        raise RuntimeError("REDIS_URL is not set")
    with _lock:
        if _pid != os.getpid():  # forked: the parent's sockets are not ours
            _pools.clear()
            _clients.clear()
            _pid = os.getpid()
        pool = _pools.get(url)
        if pool is None:
            pool = redis.BlockingConnectionPool.from_url(url, **{**_options(), **options})
            _pools[url] = pool
        return pool


_clients: dict[int, redis.Redis] = {}


def redis_client(url: str | None = None) -> redis.Redis:
    """The client on the shared pool (one per pool: building a `redis.Redis` costs ~0.4 ms of CPU in
    redis-py 8, which the chat's rate limiter paid on every request). Thread-safe, as redis-py clients are."""
    pool = redis_pool(url)
    client = _clients.get(id(pool))
    if client is None or client.connection_pool is not pool:
        client = _clients[id(pool)] = redis.Redis(connection_pool=pool)
    return client


# Event-loop clients (redis.asyncio) for the public chat's rate limiter on the ASGI server's loop: one small
# pool per loop (a pipeline holds a connection for one round trip, so a few serve hundreds of requests).
ASYNC_MAX_CONNECTIONS = 4
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()


def redis_async_client() -> redis.asyncio.Redis:
    """The running loop's client for REDIS_URL (created on first use)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        options = {**_options(), "max_connections": min(ASYNC_MAX_CONNECTIONS, settings.REDIS_MAX_CONNECTIONS)}
        pool = redis.asyncio.BlockingConnectionPool.from_url(settings.REDIS_URL, **options)
        client = _async_clients[loop] = redis.asyncio.Redis(connection_pool=pool)
    return client


def redis_reset() -> None:
    """Drop every pool (tests that point REDIS_URL elsewhere)."""
    with _lock:
        for pool in _pools.values():
            pool.disconnect()
        _pools.clear()
        _clients.clear()
        _async_clients.clear()
        _resp_connections.clear()


class SharedConnectionPool(redis.BlockingConnectionPool):
    """`pool_class` for Django's Redis cache: hands out the shared pool instead of a new one."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:  # type: ignore[override]
        return redis_pool(url, **kwargs)


# --- the hot path's lean connection ---------------------------------------------------------------------------


class _RespProtocol(asyncio.Protocol):
    """One connection's replies, in order: each `call` writes its commands in one write and its future gets their
    replies the moment the last of them is parsed (hiredis, in `data_received`). A reply error (`-ERR …`) is a
    `redis.ResponseError` in its place; a closed connection or an unparsable reply fails every call waiting."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=redis.ResponseError)
        self._waiting: collections.deque[tuple[int, list[Any], asyncio.Future[list[Any]]]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    async def call(self, commands: list[bytes], timeout: float) -> list[Any]:
        if self.closed or self.transport is None:
            raise redis.ConnectionError("Connection closed by server.")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((len(commands), [], future))
        self.transport.write(b"".join(commands))
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:  # the replies would come out of step: the connection goes
            self.abort(redis.TimeoutError("Timeout reading from Redis"))
            raise redis.TimeoutError("Timeout reading from Redis") from None

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        try:
            while waiting:
                count, replies, future = waiting[0]
                while len(replies) < count:
                    reply = self._reader.gets()
                    if reply is False:  # incomplete (RESP2 has no false reply)
                        return
                    replies.append(reply)
                waiting.popleft()
                if not future.done():  # not a call cancelled meanwhile (its replies are read all the same)
                    future.set_result(replies)
        except hiredis.ProtocolError as exc:
            self.abort(redis.ConnectionError(f"Protocol error from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(redis.ConnectionError("Connection closed by server."))

    def abort(self, error: Exception) -> None:
        self._fail(error)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: Exception) -> None:
        self.closed = True
        while self._waiting:
            future = self._waiting.popleft()[2]
            if not future.done():
                future.set_exception(error)


class RespConnection:
    """A lean Redis connection of one event loop, for the public chat's rate-limit script (widgets.ratelimit, on
    every chat turn and every new ChatKit request): commands packed by hiredis, written in one write, replies parsed
    by hiredis straight off the socket. redis.asyncio's pipeline spent ~190 µs of the loop's CPU per round trip on
    this machine (command stack, pool checkout and release, retry and event-dispatch layers, a stream reader),
    this ~45 µs (2026-12-05, 3,000 sequential one-script round trips each). Connected on first use and again after
    any failure, with AUTH and SELECT from REDIS_URL and the pool's timeouts; a failure is `redis.ConnectionError`
    or `redis.TimeoutError`, as from redis-py, so callers' fallbacks are unchanged. Plain TCP URLs only
    (`redis_resp_connection`): TLS and unix sockets keep redis-py."""

    def __init__(self, *, host: str, port: int, db: int, username: str | None, password: str | None) -> None:
        self._address = (host, port)
        self._hello = []
        if password:
            self._hello.append(hiredis.pack_command(("AUTH", *((username,) if username else ()), password)))
        if db:
            self._hello.append(hiredis.pack_command(("SELECT", db)))
        self._protocol: _RespProtocol | None = None
        self._lock = asyncio.Lock()

    async def execute(self, commands: list[tuple[str | bytes | int, ...]]) -> list[Any]:
        """The replies of `commands` (each a command's name and arguments), in order, from one write."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await protocol.call(
            [hiredis.pack_command(command) for command in commands], settings.REDIS_SOCKET_TIMEOUT
        )

    async def _connect(self) -> _RespProtocol:
        async with self._lock:  # the calls that find it closed together share one new connection
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            host, port = self._address
            try:
                async with asyncio.timeout(settings.REDIS_SOCKET_TIMEOUT):
                    _, protocol = await asyncio.get_running_loop().create_connection(_RespProtocol, host, port)
            except (OSError, TimeoutError) as exc:
                raise redis.ConnectionError(f"Error connecting to {host}:{port}: {exc!r}") from exc
            if self._hello:
                try:
                    replies = await protocol.call(self._hello, settings.REDIS_SOCKET_TIMEOUT)
                except BaseException:
                    protocol.abort(redis.ConnectionError("Redis handshake failed"))
                    raise
                refused = next((reply for reply in replies if isinstance(reply, Exception)), None)
                if refused is not None:  # a wrong password, a db out of range
                    protocol.abort(redis.ConnectionError(str(refused)))
                    raise redis.ConnectionError(f"Redis refused the connection's setup: {refused}")
            self._protocol = protocol
            return protocol

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()


_resp_connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, RespConnection | None]] = (
    weakref.WeakKeyDictionary()
)


def redis_resp_connection() -> RespConnection | None:
    """The running loop's `RespConnection` to REDIS_URL, or None when that URL is not plain TCP (rediss://, unix://:
    the caller uses redis-py)."""
    loop = asyncio.get_running_loop()
    url = settings.REDIS_URL
    known = _resp_connections.get(loop)
    if known is not None and known[0] == url:
        return known[1]
    if known is not None and known[1] is not None:
        known[1].close()
    options = redis.connection.parse_url(url)
    connection = None
    if url.startswith("redis://") and "path" not in options and "connection_class" not in options:
        connection = RespConnection(
            host=options.get("host") or "localhost",
            port=int(options.get("port") or 6379),
            db=int(options.get("db") or 0),
            username=options.get("username"),
            password=options.get("password"),
        )
    _resp_connections[loop] = (url, connection)
    return connection
