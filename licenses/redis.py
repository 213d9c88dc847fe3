"""One Redis connection pool per process, shared by the Django cache, the chat rate limiter, the
voice slots (through the cache) and the health check.

Django's Redis cache builds a new client, and so a new pool, for every cache object; under ASGI
every request context gets its own cache object, so each request opened a new TCP connection
(issue 11.10: 400 requests -> 429 connections). Here the pool is module level, keyed by URL,
recreated after a fork, and bounded (a caller waits up to REDIS_POOL_TIMEOUT for a free connection
instead of opening the 1001st). Short socket timeouts make an outage fail fast.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

import redis
import redis.asyncio
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


class SharedConnectionPool(redis.BlockingConnectionPool):
    """`pool_class` for Django's Redis cache: hands out the shared pool instead of a new one."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:  # type: ignore[override]
        return redis_pool(url, **kwargs)
