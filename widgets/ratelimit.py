"""Fixed-window request counters for the public endpoints (chat, leads, share-preview chat).

Counted in Redis (one INCR+EXPIRE round trip on the shared pool, licenses/redis.py) when REDIS_URL is
set, else in the Django cache (local memory in development). When Redis cannot be reached the
limiter does not fail the request (issue 11.4): it falls back to counters in this process, with the
same limit per window, so a visitor is still bounded (per process) during the outage; the outage is
logged once, and Redis is retried after a short pause instead of on every request.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings
from django.core.cache import cache

from licenses.redis import redis_client

logger = logging.getLogger(__name__)

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

    def _redis_hit(self, key: str, ttl: int, peek: str | None = None) -> tuple[int, object]:
        pipe = redis_client().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, ttl, nx=True)
        if peek is not None:
            pipe.get(cache.make_and_validate_key(peek))  # the raw (pickled) value of the cache's key
        count, _, *peeked = pipe.execute()
        return int(count), (peeked[0] if peeked else None)

    def _cache_hit(self, key: str, ttl: int) -> int:
        cache.add(key, 0, timeout=ttl)
        try:
            return cache.incr(key)
        except ValueError:  # evicted between add and incr
            cache.set(key, 1, timeout=ttl)
            return 1

    def hit(self, key: str, ttl: int) -> int:
        return self.hit_peek(key, ttl)[0]

    def hit_peek(self, key: str, ttl: int, peek: str | None = None) -> tuple[int, object]:
        """Count one hit, and read the cache key `peek` in the same round trip: (count, its value as
        stored — raw bytes in Redis; None when absent or when Redis is unreachable)."""
        if not settings.REDIS_URL:
            return self._cache_hit(key, ttl), (cache.get(peek) if peek is not None else None)
        if time.monotonic() >= self._down_until:
            try:
                count, peeked = self._redis_hit(key, ttl, peek)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                with self._lock:
                    if time.monotonic() >= self._down_until:
                        logger.warning(
                            "Redis unreachable (%s): rate limits fall back to per-process counters for %ss",
                            exc.__class__.__name__,
                            RETRY_REDIS_AFTER,
                        )
                    self._down_until = time.monotonic() + RETRY_REDIS_AFTER
            else:
                if self._down_until:
                    with self._lock:
                        if self._down_until:
                            logger.warning("Redis reachable again: rate limits are shared across processes")
                            self._down_until = 0.0
                return count, peeked
        return self.local.hit(key, ttl), None

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._down_until


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
