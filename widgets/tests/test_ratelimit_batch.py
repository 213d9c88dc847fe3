"""The rate limiter's batch on a server loop (widgets.ratelimit._PeekBatch) for several counters per hit: the ChatKit
server's visitor and license counters (issue 8 bench) arriving together share one pipeline with the public chat's
one-counter hits, each hit counted as when it went alone (in order, stopping at the first counter over its limit),
and the fallback when Redis is away is unchanged."""

from __future__ import annotations

import asyncio

import redis
from asgiref.sync import async_to_sync

from widgets import ratelimit


def test_multi_counter_hits_arriving_together_share_one_pipeline(redis_limiter, pipelines, frozen_minute):
    checks = (("ck:visitor:1:v", 1_000), ("ck:license:1", 1_000))

    async def together():
        return await asyncio.gather(
            *(ratelimit.rate_hits_peek_async(checks, peek="sb:nothing") for _ in range(6)),
            ratelimit.rate_hit_peek_async("chat:1:v", peek="sb:nothing"),  # the public chat's, in the same batch
        )

    results = async_to_sync(together)()
    assert pipelines == [1, 6]
    assert all(result == (None, None) for result in results[:6])
    direct = redis.Redis(port=redis_limiter.port)
    for key in ("sb:rate:ck:visitor:1:v:*", "sb:rate:ck:license:1:*", "sb:rate:chat:1:v:*"):
        (counter,) = direct.keys(key)
        assert int(direct.get(counter)) == (1 if "chat" in key else 6)
        assert 60 < direct.ttl(counter) <= 120


def test_a_visitor_over_its_limit_uses_none_of_its_licenses_in_a_batch(redis_limiter, pipelines, frozen_minute):
    from django.core.cache import cache

    direct = redis.Redis(port=redis_limiter.port)
    direct.set(cache.make_and_validate_key("peeked"), b"generation-7")
    checks = (("ck:visitor:2:v", 3), ("ck:license:2", 100))

    async def together():
        return await asyncio.gather(*(ratelimit.rate_hits_peek_async(checks, peek="peeked") for _ in range(5)))

    results = async_to_sync(together)()
    assert sum(pipelines) == 5 and len(pipelines) < 5
    waits = sorted(wait is not None for wait, _ in results)
    assert waits == [False, False, False, True, True]  # three within the visitor's limit, two over it
    assert all(peeked == b"generation-7" for _, peeked in results)
    (visitor,) = direct.keys("sb:rate:ck:visitor:2:v:*")
    (license,) = direct.keys("sb:rate:ck:license:2:*")
    assert int(direct.get(visitor)) == 5 and int(direct.get(license)) == 3  # the refused two counted no license hit


def test_multi_counter_hits_fall_back_to_per_process_counters_without_redis(redis_limiter, frozen_minute):
    redis_limiter.stop()
    checks = (("ck:visitor:3:v", 2), ("ck:license:3", 100))

    async def three():
        return [await ratelimit.rate_hits_peek_async(checks, peek="sb:nothing") for _ in range(3)]

    results = async_to_sync(three)()
    assert ratelimit.limiter.degraded
    assert [wait is not None for wait, _ in results] == [False, False, True]
    assert all(peeked is None for _, peeked in results)
