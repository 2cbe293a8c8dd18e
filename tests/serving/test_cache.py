"""One contract for both caches, run against the in-process LRU and a real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest

from serving.cache import MemoryCache, RedisCache, cache_key
from serving.redis_link import RedisLink


@pytest.fixture(params=["memory", "redis"])
def make_cache(request, tmp_path):
    """A factory of caches of one kind with a given TTL (Redis: a fresh server per test)."""
    if request.param == "memory":
        yield lambda ttl_s=60: MemoryCache(1000, ttl_s)
        return
    redis_server = request.getfixturevalue("redis_server")
    yield lambda ttl_s=60: RedisCache(RedisLink(redis_server.url), ttl_s)


def run(coroutine):
    return asyncio.run(coroutine)


def test_set_then_get_many_keeps_order_and_reports_misses(make_cache):
    async def scenario():
        cache = make_cache()
        await cache.set_many({"a": "1", "c": "3 ü"})
        found = await cache.get_many(["a", "b", "c", "a"])
        await cache.close()
        return found

    assert run(scenario()) == ["1", None, "3 ü", "1"]


def test_entries_expire_after_the_ttl(make_cache):
    async def scenario():
        cache = make_cache(ttl_s=1)
        await cache.set_many({"k": "v"})
        before = await cache.get_many(["k"])
        time.sleep(1.2)
        after = await cache.get_many(["k"])
        await cache.close()
        return before, after

    assert run(scenario()) == (["v"], [None])


def test_a_later_write_replaces_the_value(make_cache):
    async def scenario():
        cache = make_cache()
        await cache.set_many({"k": "old"})
        await cache.set_many({"k": "new"})
        found = await cache.get_many(["k"])
        await cache.close()
        return found

    assert run(scenario()) == ["new"]


def test_memory_cache_evicts_the_least_recently_used():
    async def scenario():
        cache = MemoryCache(max_entries=2, ttl_s=60)
        await cache.set_many({"a": "1", "b": "2"})
        await cache.get_many(["a"])  # b is now the least recently used
        await cache.set_many({"c": "3"})
        return await cache.get_many(["a", "b", "c"])

    assert run(scenario()) == ["1", None, "3"]


def test_redis_going_away_reads_as_misses_and_comes_back(redis_server):
    errors = []

    async def scenario():
        cache = RedisCache(
            RedisLink(redis_server.url, timeout_s=0.2, retry_s=0.3, on_error=errors.append), 60
        )
        await cache.set_many({"k": "v"})
        redis_server.stop()
        down = await cache.get_many(["k"])
        await cache.set_many({"x": "y"})  # benched: no error, no wait
        redis_server.start()  # a fresh server: empty
        await asyncio.sleep(0.4)
        await cache.set_many({"k": "again"})
        up = await cache.get_many(["k"])
        await cache.close()
        return down, up

    assert run(scenario()) == ([None], ["again"])
    assert errors  # counted


def test_the_key_covers_version_pair_options_alignment_and_normalises_whitespace():
    options = '{"beam_size":5}'
    key = cache_key("v1", "en", "de", "A  man\u00a0 runs. ", options)
    assert key == cache_key("v1", "en", "de", "A man runs.", options)
    others = [
        cache_key("v2", "en", "de", "A man runs.", options),
        cache_key("v1", "en", "fr", "A man runs.", options),
        cache_key("v1", "en", "de", "A man runs!", options),
        cache_key("v1", "en", "de", "A man runs.", '{"beam_size":4}'),
        cache_key("v1", "en", "de", "A man runs.", options, alignment=True),  # values with alignments
    ]
    assert len({key, *others}) == 6
    assert key == cache_key("v1", "en", "de", "A man runs.", options, alignment=False)
