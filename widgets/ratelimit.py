"""Fixed-window request counters for the public endpoints (chat, leads, share-preview chat).

Counted in Redis (one INCR+EXPIRE round trip on the shared pool, licenses/redis.py) when REDIS_URL is
set, else in the Django cache (local memory in development). When Redis cannot be reached the
limiter does not fail the request (issue 11.4): it falls back to counters in this process, with the
same limit per window, so a visitor is still bounded (per process) during the outage; the outage is
logged once, and Redis is retried after a short pause instead of on every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches

from licenses.redis import redis_async_client, redis_client, redis_resp_connection

logger = logging.getLogger(__name__)

# Several counters in one round trip, in order, stopping at the first one over its limit (so a visitor
# over its own limit does not use up its license's), and the value of one more key. KEYS: the peeked key,
# then the counters; ARGV: the TTL, then each counter's limit. Returns {peeked or nil, count, count...}.
HITS_SCRIPT = """
local out = {redis.call('GET', KEYS[1])}
for i = 2, #KEYS do
  local count = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1], 'NX')
  out[i] = count
  if count > tonumber(ARGV[i]) then break end
end
return out
"""
HITS_SHA = hashlib.sha1(HITS_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts by their SHA-1
RETRY_REDIS_AFTER = 5.0  # seconds without trying Redis after a failure
LOCAL_MAX_KEYS = 100_000  # the per-process fallback never grows past this


class _LocalCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[float, int]] = {}

    def hit(self, key: str, ttl: int) -> int:
        now = time.monotonic()
        with self._lock:
            if len(self._counts) >= LOCAL_MAX_KEYS:
                self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
                if len(self._counts) >= LOCAL_MAX_KEYS:
                    self._counts.clear()
            expires, count = self._counts.get(key, (0.0, 0))
            if expires <= now:
                expires, count = now + ttl, 0
            self._counts[key] = (expires, count + 1)
            return count + 1


class _Limiter:
    def __init__(self) -> None:
        self.local = _LocalCounters()
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._script: redis.commands.core.Script | None = None

    def _redis_hit(self, key: str, ttl: int, peek: str | None = None) -> tuple[int, object]:
        pipe = redis_client().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, ttl, nx=True)
        if peek is not None:
            pipe.get(cache.make_and_validate_key(peek))  # the raw (pickled) value of the cache's key
        count, _, *peeked = pipe.execute()
        return int(count), (peeked[0] if peeked else None)

    def _redis_hits(
        self, keys: tuple[str, ...], limits: tuple[int, ...], ttl: int, peek: str | None
    ) -> tuple[list[int], object]:
        if self._script is None:
            self._script = redis_client().register_script(HITS_SCRIPT)
        # No peek: a key nobody writes (GET of a missing key is nil).
        peek_key = cache.make_and_validate_key(peek) if peek is not None else "sb:rate:nopeek"
        reply = self._script(keys=[peek_key, *keys], args=[ttl, *limits], client=redis_client())
        return [int(count) for count in reply[1:]], reply[0]

    def _cache_hit(self, key: str, ttl: int) -> int:
        cache.add(key, 0, timeout=ttl)
        try:
            return cache.incr(key)
        except ValueError:  # evicted between add and incr
            cache.set(key, 1, timeout=ttl)
            return 1

    async def _redis_hits_async(
        self, keys: tuple[str, ...], limits: tuple[int, ...], ttl: int, peek: str | None
    ) -> tuple[list[int], object]:
        """One hit through the running loop's `_PeekBatch` (the hits arriving together share a pipeline)."""
        loop = asyncio.get_running_loop()
        batch = _peek_batches.get(loop)
        if batch is None:
            batch = _peek_batches[loop] = _PeekBatch(loop)
        return await batch.add(keys, limits, ttl, peek)

    def hit(self, key: str, ttl: int) -> int:
        return self.hit_peek(key, ttl)[0]

    async def hit_peek_async(self, key: str, ttl: int, peek: str) -> tuple[int, object]:
        """`hit_peek` on the running event loop (redis.asyncio), for a server loop: same counts, same
        fallback when Redis is unreachable. Needs REDIS_URL."""
        if time.monotonic() >= self._down_until:
            try:
                # The limit only stops later counters of a multi-key hit; here there is one.
                (count,), peeked = await self._redis_hits_async((key,), (0,), ttl, peek)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return count, peeked
        return self.local.hit(key, ttl), None

    def hit_peek(self, key: str, ttl: int, peek: str | None = None) -> tuple[int, object]:
        """Count one hit, and read the cache key `peek` in the same round trip: (count, its value as
        stored — raw bytes in Redis; None when absent or when Redis is unreachable)."""
        if not settings.REDIS_URL:
            return self._cache_hit(key, ttl), (cache.get(peek) if peek is not None else None)
        if time.monotonic() >= self._down_until:
            try:
                count, peeked = self._redis_hit(key, ttl, peek)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return count, peeked
        return self.local.hit(key, ttl), None

    def hits_peek(
        self, keys: tuple[str, ...], limits: tuple[int, ...], ttl: int, peek: str | None = None
    ) -> tuple[list[int], object]:
        """Count a hit on each key in order until one is over its limit (the later ones are not counted),
        and read the cache key `peek`, in ONE Redis round trip: (the counts taken, the peeked value)."""
        if not settings.REDIS_URL:
            return self._counted(lambda key: self._cache_hit(key, ttl), keys, limits), (
                cache.get(peek) if peek is not None else None
            )
        if time.monotonic() >= self._down_until:
            try:
                counts, peeked = self._redis_hits(keys, limits, ttl, peek)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return counts, peeked
        return self._counted(lambda key: self.local.hit(key, ttl), keys, limits), None

    async def hits_peek_async(
        self, keys: tuple[str, ...], limits: tuple[int, ...], ttl: int, peek: str | None = None
    ) -> tuple[list[int], object]:
        """`hits_peek` on the running event loop (redis.asyncio): the same script, counts and fallback when Redis
        is unreachable, in the loop's `_PeekBatch` (the hits arriving together share one pipeline). Needs
        REDIS_URL."""
        if time.monotonic() >= self._down_until:
            try:
                counts, peeked = await self._redis_hits_async(keys, limits, ttl, peek)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return counts, peeked
        return self._counted(lambda key: self.local.hit(key, ttl), keys, limits), None

    @staticmethod
    def _counted(hit: Callable[[str], int], keys: tuple[str, ...], limits: tuple[int, ...]) -> list[int]:
        counts = []
        for key, limit in zip(keys, limits, strict=True):
            counts.append(hit(key))
            if counts[-1] > limit:
                break
        return counts

    def _went_down(self, exc: Exception) -> None:
        with self._lock:
            if time.monotonic() >= self._down_until:
                logger.warning(
                    "Redis unreachable (%s): rate limits fall back to per-process counters for %ss",
                    exc.__class__.__name__,
                    RETRY_REDIS_AFTER,
                )
            self._down_until = time.monotonic() + RETRY_REDIS_AFTER

    def _came_back(self) -> None:
        if self._down_until:
            with self._lock:
                if self._down_until:
                    logger.warning("Redis reachable again: rate limits are shared across processes")
                    self._down_until = 0.0

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._down_until


# One hit of a `_PeekBatch`: (the counters' keys, their limits, the TTL, the cache key to peek or None).
_Hit = tuple[tuple[str, ...], tuple[int, ...], int, str | None]


class _PeekBatch:
    """The rate-limit round trips of one event loop, coalesced (issue 11 bench: a Redis round trip per chat
    request was a sixth of its CPU, most of it the socket write; issue 8 bench: the ChatKit server's two-counter
    check was a fifth of a new thread's CPU before its first byte): the hits that arrive while one pipeline is
    in flight go together in the next one — one script call each (`_pipeline`), the same counts as one round
    trip per hit. A hit is the public chat's one counter or the ChatKit server's visitor and license counters
    (`hits_peek`'s rule: in order, stopping at the first over its limit), each with the cache key it peeks.
    One pipeline at a time per loop, so under light load it is one hit (no added wait). A failed pipeline fails
    each of its hits, which then count per process as usual.

    The pipeline's own task hands each hit its result the moment the replies are parsed, and a hit's future is
    its own (a caller that is cancelled cancels only that future; the pipeline goes on for the others), so a
    waiting request resumes one loop turn after the reply instead of four (the task's end, its done-callback, then
    `shield`'s two hops: issue 11 bench, under 200 visitors every loop turn is ~1 ms of other requests' work)."""

    MAX_BATCH = 500

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[tuple[_Hit, asyncio.Future[tuple[list[int], object]]]] = []
        self._sending: asyncio.Task[None] | None = None

    def add(
        self, keys: tuple[str, ...], limits: tuple[int, ...], ttl: int, peek: str | None
    ) -> asyncio.Future[tuple[list[int], object]]:
        future: asyncio.Future[tuple[list[int], object]] = self._loop.create_future()
        self._pending.append(((keys, limits, ttl, peek), future))
        if self._sending is None:
            self._send()
        return future

    def _send(self) -> None:
        batch, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
        self._sending = self._loop.create_task(self._round_trip(batch))

    async def _round_trip(self, batch: list[tuple[_Hit, asyncio.Future[tuple[list[int], object]]]]) -> None:
        try:
            results = await _pipeline([hit for hit, _ in batch])
        except asyncio.CancelledError:  # the loop is closing
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - each hit gets it (and falls back to per-process counts)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # not a caller that was cancelled meanwhile
                    future.set_result(result)
        finally:
            self._sending = None
            if self._pending:
                self._send()


async def _pipeline(hits: list[_Hit]) -> list[tuple[list[int], object]]:
    """Each hit as ONE EVALSHA of HITS_SCRIPT (GET the peeked key, INCR + EXPIRE NX each counter in order until
    one is over its limit: the same commands, run by Redis), all in one write: (the counts taken, the peeked
    value) per hit. Issue 11 bench: redis-py packed and parsed three commands per request, ~40 us of the loop's
    CPU per hit against ~15-20 us for one script call (~2-3 us more in Redis); and its pipeline's own layers were
    ~190 us per round trip against ~45 us on the loop's lean connection (`licenses.redis.RespConnection`, used
    whenever REDIS_URL is plain TCP). A hit refused with NOSCRIPT (Redis restarted or its scripts flushed)
    counted nothing: the script is loaded and those hits are sent again."""
    cache_key = _cache_key_function()
    calls = [
        ("EVALSHA", HITS_SHA, 1 + len(keys), cache_key(peek) if peek is not None else "sb:rate:nopeek", *keys, ttl)
        + limits  # a nil peek: a key nobody writes
        for keys, limits, ttl, peek in hits
    ]
    connection = redis_resp_connection()
    send = _redis_py_send if connection is None else connection.execute
    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        replies = await send([calls[i] for i in todo])
        missing = []
        for i, reply in zip(todo, replies, strict=True):
            if _no_script(reply) and attempt == 0:
                missing.append(i)
            elif isinstance(reply, Exception):
                raise reply
            else:
                results[i] = ([int(count) for count in reply[1:]], reply[0])
        if not missing:
            break
        (loaded,) = await send([("SCRIPT", "LOAD", HITS_SCRIPT)])
        if isinstance(loaded, Exception):
            raise loaded
        todo = missing
    return results


async def _redis_py_send(commands: list[tuple[str | int, ...]]) -> list[Any]:
    """`RespConnection.execute` through redis.asyncio's pipeline, for a REDIS_URL the lean connection does not speak
    (TLS, a unix socket): the same replies, a reply error in its place."""
    pipe = redis_async_client().pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return await pipe.execute(raise_on_error=False)


def _no_script(reply: object) -> bool:
    """Redis's NOSCRIPT reply, as the lean connection gives it or as redis-py names it."""
    return isinstance(reply, redis.exceptions.NoScriptError) or (
        isinstance(reply, redis.ResponseError) and str(reply).startswith("NOSCRIPT")
    )


_cache_keys: list[tuple[Any, Callable[[str], str]]] = []  # [(settings.CACHES, its backend's key function)]


def _cache_key_function() -> Callable[[str], str]:
    """The cache backend's `make_and_validate_key` (the raw Redis key of a cache key), from a backend built once per
    CACHES setting. Not through `cache`: that proxy's every attribute is a locked asgiref Local lookup, which the
    DB-step threads contend for (issue 11 bench: 13% of the chat's CPU when it was once per request), and each new
    task on the loop — every pipeline — has a context of its own, in which `caches` built a new backend
    (py-spy, issue 8 bench: a sixth of a pipeline's CPU)."""
    conf = settings.CACHES
    if not _cache_keys or _cache_keys[0][0] is not conf:
        _cache_keys[:] = [(conf, caches.create_connection(DEFAULT_CACHE_ALIAS).make_and_validate_key)]
    return _cache_keys[0][1]


_peek_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PeekBatch] = weakref.WeakKeyDictionary()

limiter = _Limiter()


def rate_hit(key: str, *, window: int = 60) -> tuple[int, int]:
    """Count one request under `key` in the current `window`-second window: (count, seconds left)."""
    now = time.time()
    slot = int(now // window)
    count = limiter.hit(f"sb:rate:{key}:{slot}", ttl=window * 2)
    return count, max(1, int(window - (now % window)))


def rate_hit_peek(key: str, *, peek: str, window: int = 60) -> tuple[int, int, object]:
    """`rate_hit` that also reads the cache key `peek` in the same Redis round trip (the public chat
    checks its license's cache generation this way): (count, seconds left, the value or None)."""
    now = time.time()
    slot = int(now // window)
    count, peeked = limiter.hit_peek(f"sb:rate:{key}:{slot}", ttl=window * 2, peek=peek)
    return count, max(1, int(window - (now % window))), peeked


def rate_hits_peek(
    checks: tuple[tuple[str, int], ...], *, peek: str | None = None, window: int = 60
) -> tuple[int | None, object]:
    """`rate_hit` for several (key, limit) checks in ONE Redis round trip, in order, stopping at the first
    one over its limit (a visitor over its own limit does not use up its license's), reading the cache key
    `peek` in it too (the ChatKit server reads its license's cache generation this way):
    (seconds to wait when a check is over its limit else None, the peeked value or None)."""
    now = time.time()
    keys, limits = _window_keys(checks, now=now, window=window)
    counts, peeked = limiter.hits_peek(keys, limits, ttl=window * 2, peek=peek)
    return _wait(counts, limits, now=now, window=window), peeked


async def rate_hits_peek_async(
    checks: tuple[tuple[str, int], ...], *, peek: str | None = None, window: int = 60
) -> tuple[int | None, object]:
    """`rate_hits_peek` awaited on the running loop (redis.asyncio; REDIS_URL must be set)."""
    now = time.time()
    keys, limits = _window_keys(checks, now=now, window=window)
    counts, peeked = await limiter.hits_peek_async(keys, limits, ttl=window * 2, peek=peek)
    return _wait(counts, limits, now=now, window=window), peeked


def _window_keys(
    checks: tuple[tuple[str, int], ...], *, now: float, window: int
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    slot = int(now // window)
    return tuple(f"sb:rate:{key}:{slot}" for key, _ in checks), tuple(limit for _, limit in checks)


def _wait(counts: list[int], limits: tuple[int, ...], *, now: float, window: int) -> int | None:
    """Seconds to wait when a count is over its limit, else None."""
    over = any(count > limit for count, limit in zip(counts, limits, strict=False))
    return max(1, int(window - (now % window))) if over else None


async def rate_hit_peek_async(key: str, *, peek: str, window: int = 60) -> tuple[int, int, object]:
    """`rate_hit_peek` awaited on the running loop (redis.asyncio; REDIS_URL must be set)."""
    now = time.time()
    slot = int(now // window)
    count, peeked = await limiter.hit_peek_async(f"sb:rate:{key}:{slot}", ttl=window * 2, peek=peek)
    return count, max(1, int(window - (now % window))), peeked
