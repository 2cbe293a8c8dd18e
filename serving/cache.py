"""The translation cache: Redis when a URL is configured, else an in-process LRU, one interface.

Values are strings (the caller serialises), keys come from `cache_key`, which hashes everything
that changes a translation: the model version (not its name: a retrained model must miss), the
language pair, the normalised sentence, the decoding options and whether alignments were asked for. Hashing a JSON list (never a
"|"-joined string) keeps distinct inputs distinct.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import unicodedata
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from serving.redis_link import RedisLink

KEY_PREFIX = "nmt:tr:"


def normalise(sentence: str) -> str:
    """NFC, trimmed, inner whitespace runs collapsed: texts that translate alike share a key."""
    return " ".join(unicodedata.normalize("NFC", sentence).split())


def cache_key(version: str, src: str, tgt: str, sentence: str, options: str, alignment: bool = False) -> str:
    """`options`: the decoding options as JSON (`SearchConfig.model_dump_json()`); `alignment`:
    whether the value holds alignments (an answer without them must not serve a request for them)."""
    fields = [version, src, tgt, normalise(sentence), options]
    payload = orjson.dumps([*fields, "alignment"] if alignment else fields)
    return KEY_PREFIX + hashlib.sha256(payload).hexdigest()


class TranslationCache(Protocol):
    kind: str

    async def get_many(self, keys: list[str]) -> list[str | None]:
        """The value of each key, None where missing, expired or unavailable."""

    async def set_many(self, items: dict[str, str]) -> None:
        """Store every item with the cache's TTL; never raises for a backend failure."""

    async def close(self) -> None: ...


class MemoryCache:
    """An LRU of at most `max_entries` items, each expiring `ttl_s` after it was written."""

    kind = "memory"

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def get_many(self, keys: list[str]) -> list[str | None]:
        now = time.monotonic()
        found: list[str | None] = []
        for key in keys:
            item = self._items.get(key)
            if item is None or item[0] <= now:
                if item is not None:
                    del self._items[key]
                found.append(None)
            else:
                self._items.move_to_end(key)
                found.append(item[1])
        return found

    async def set_many(self, items: dict[str, str]) -> None:
        expires = time.monotonic() + self.ttl_s
        for key, value in items.items():
            self._items[key] = (expires, value)
            self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    async def close(self) -> None:
        self._items.clear()


class RedisCache:
    """Reads are pipelined across requests: a request's keys join the next MGET, and while one
    MGET is in flight the keys of the requests arriving meanwhile gather for the following one.
    Under load one round trip serves many requests (the client library's cost per command, not
    Redis, is what limits cache hits), and a lone request still gets its own MGET at once.
    Writes: one pipelined SET ... EX per batch. Failures read as misses."""

    kind = "redis"

    def __init__(self, link: RedisLink, ttl_s: int) -> None:
        self.link = link
        self.ttl_s = ttl_s
        self._waiting: list[tuple[list[str], asyncio.Future[list[str | None]]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def get_many(self, keys: list[str]) -> list[str | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[str | None]] = loop.create_future()
        self._waiting.append((keys, future))
        if self._reader is None:
            self._reader = loop.create_task(self._read())
        return await future

    async def _read(self) -> None:
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                values = await self._mget([key for request_keys, _ in waiting for key in request_keys])
                start = 0
                for request_keys, future in waiting:
                    if not future.done():
                        future.set_result(values[start : start + len(request_keys)])
                    start += len(request_keys)
        finally:
            self._reader = None
            for request_keys, future in self._waiting:  # only if this task was cancelled
                if not future.done():
                    future.set_result([None] * len(request_keys))
            self._waiting.clear()

    async def _mget(self, keys: list[str]) -> list[str | None]:
        async def work(client: Any) -> list[str | None]:
            return list(await client.mget(keys))

        missing: list[str | None] = [None] * len(keys)
        return await self.link.call("get", work, missing)

    async def set_many(self, items: dict[str, str]) -> None:
        async def work(client: Any) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value, ex=self.ttl_s)
                await pipe.execute()

        if items:
            await self.link.call("set", work, None)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.link.close()
