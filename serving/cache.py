"""The translation cache: Redis when a URL is configured, else an in-process LRU, one interface.

Values are strings (the caller serialises), keys come from `cache_key`, which hashes everything
that changes a translation: the model version (not its name: a retrained model must miss), the
language pair, the normalised sentence and the decoding options. Hashing a JSON list (never a
"|"-joined string) keeps distinct inputs distinct.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections import OrderedDict
from typing import Any, Protocol

from serving.redis_link import RedisLink

KEY_PREFIX = "nmt:tr:"


def normalise(sentence: str) -> str:
    """NFC, trimmed, inner whitespace runs collapsed: texts that translate alike share a key."""
    return " ".join(unicodedata.normalize("NFC", sentence).split())


def cache_key(version: str, src: str, tgt: str, sentence: str, options: str) -> str:
    """`options`: the decoding options as JSON (`SearchConfig.model_dump_json()`)."""
    payload = json.dumps([version, src, tgt, normalise(sentence), options], ensure_ascii=False)
    return KEY_PREFIX + hashlib.sha256(payload.encode("utf-8")).hexdigest()


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
    """MGET to read, one pipelined SET ... EX per batch to write; failures read as misses."""

    kind = "redis"

    def __init__(self, link: RedisLink, ttl_s: int) -> None:
        self.link = link
        self.ttl_s = ttl_s

    async def get_many(self, keys: list[str]) -> list[str | None]:
        async def work(client: Any) -> list[str | None]:
            return list(await client.mget(keys))

        return await self.link.call("get", work, [None] * len(keys))

    async def set_many(self, items: dict[str, str]) -> None:
        async def work(client: Any) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value, ex=self.ttl_s)
                await pipe.execute()

        if items:
            await self.link.call("set", work, None)

    async def close(self) -> None:
        await self.link.close()
