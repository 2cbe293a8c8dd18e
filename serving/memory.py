"""The translation memory: approved translations of sentences, returned instead of the model's.

An entry holds a sentence and its approved translation for a language pair, either for one model
family (a model name: its retrained versions share the entry) or for every model of the pair
(`ANY_MODEL`). Sentences are matched normalised (`serving.cache.normalise`: NFC, whitespace
collapsed and trimmed, case kept). A lookup takes the family's entry before the pair's.

Kept in Redis without expiry when the service has Redis (keys `nmt:tm:<sha256>`, plain SET, no
TTL), else in this process (at most `max_entries`). Redis going away never breaks translation:
lookups then miss; writes, reads and deletes through /v1/memory raise `MemoryUnavailable` (503).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from serving.cache import normalise
from serving.redis_link import RedisLink

KEY_PREFIX = "nmt:tm:"
IN_USE_KEY = "nmt:tm-in-use"  # set by the first write, never removed
REREAD_S = 2.0  # while the memory is empty, another replica's first write is seen this late
ANY_MODEL = ""  # an entry for every model of its pair


class MemoryUnavailable(Exception):
    """The memory's store cannot be reached (or is full): the write or read did not happen."""


def memory_key(family: str, src: str, tgt: str, sentence: str) -> str:
    return KEY_PREFIX + hashlib.sha256(orjson.dumps([family, src, tgt, normalise(sentence)])).hexdigest()


class TranslationMemory(Protocol):
    kind: str

    async def in_use(self) -> bool:
        """Whether the memory may hold an entry (False: lookups can be skipped); never raises."""

    async def lookup(self, family: str, src: str, tgt: str, sentences: list[str]) -> list[str | None]:
        """Each sentence's approved translation (the family's, else the pair's), None where there
        is none or the store is unavailable; never raises for a store failure."""

    async def get(self, family: str, src: str, tgt: str, text: str) -> str | None:
        """The entry's translation (exactly that family), None if absent; raises MemoryUnavailable."""

    async def put(self, family: str, src: str, tgt: str, text: str, translation: str) -> None:
        """Store (or replace) an entry; raises MemoryUnavailable."""

    async def delete(self, family: str, src: str, tgt: str, text: str) -> bool:
        """Remove an entry: whether there was one; raises MemoryUnavailable."""


def _value(text: str, translation: str) -> str:
    return orjson.dumps({"text": normalise(text), "translation": translation}).decode()


def _translation(raw: str | None) -> str | None:
    return None if raw is None else orjson.loads(raw)["translation"]


def lookup_keys(family: str, src: str, tgt: str, sentences: list[str]) -> list[str]:
    """Two keys per sentence: the family's entry, then the pair's."""
    return [memory_key(f, src, tgt, s) for s in sentences for f in (family, ANY_MODEL)]


def first_found(values: list[str | None]) -> list[str | None]:
    """Of each sentence's two values (family, pair), the first there is."""
    return [
        _translation(own if own is not None else shared)
        for own, shared in zip(values[::2], values[1::2], strict=True)
    ]


class LocalMemory:
    kind = "memory"

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: dict[str, str] = {}

    async def lookup(self, family: str, src: str, tgt: str, sentences: list[str]) -> list[str | None]:
        if not self._items:
            return [None] * len(sentences)
        return first_found([self._items.get(k) for k in lookup_keys(family, src, tgt, sentences)])

    async def in_use(self) -> bool:
        return bool(self._items)

    async def get(self, family: str, src: str, tgt: str, text: str) -> str | None:
        return _translation(self._items.get(memory_key(family, src, tgt, text)))

    async def put(self, family: str, src: str, tgt: str, text: str, translation: str) -> None:
        key = memory_key(family, src, tgt, text)
        if key not in self._items and len(self._items) >= self.max_entries:
            raise MemoryUnavailable(f"the in-process memory is full ({self.max_entries} entries)")
        self._items[key] = _value(text, translation)

    async def delete(self, family: str, src: str, tgt: str, text: str) -> bool:
        return self._items.pop(memory_key(family, src, tgt, text), None) is not None


_DOWN = object()  # what a Redis call answers when Redis is unavailable


class RedisMemory:
    """`read`: a reader of many keys that never raises (the Redis cache's `get_many`, whose
    concurrent reads share one MGET: a translation's memory and cache lookups then cost one round
    trip together); without one, a lookup is an MGET of its own."""

    kind = "redis"

    def __init__(
        self, link: RedisLink, read: Callable[[list[str]], Awaitable[list[str | None]]] | None = None
    ) -> None:
        self.link = link
        self._read = read or self._mget
        self._in_use = False  # once seen (or written here), for good: entries are kept without expiry
        self._checked = -REREAD_S

    async def in_use(self) -> bool:
        """Whether any entry was ever written (`IN_USE_KEY`), read again at most every `REREAD_S`
        while none was: a service whose memory is empty skips its keys on every cache hit."""
        now = time.monotonic()
        if self._in_use or now - self._checked < REREAD_S:
            return self._in_use
        self._checked = now

        async def work(client: Any) -> bool:
            return bool(await client.exists(IN_USE_KEY))

        self._in_use = bool(await self.link.call("memory", work, False))
        return self._in_use

    async def _mget(self, keys: list[str]) -> list[str | None]:
        async def work(client: Any) -> list[str | None]:
            return list(await client.mget(keys))

        return await self.link.call("memory", work, [None] * len(keys))

    async def lookup(self, family: str, src: str, tgt: str, sentences: list[str]) -> list[str | None]:
        return first_found(await self._read(lookup_keys(family, src, tgt, sentences)))

    async def _call(self, work: Any) -> Any:
        found = await self.link.call("memory", work, _DOWN)
        if found is _DOWN:
            raise MemoryUnavailable("the translation memory's Redis is unavailable; try again later")
        return found

    async def get(self, family: str, src: str, tgt: str, text: str) -> str | None:
        key = memory_key(family, src, tgt, text)

        async def work(client: Any) -> str | None:
            return await client.get(key)

        return _translation(await self._call(work))

    async def put(self, family: str, src: str, tgt: str, text: str, translation: str) -> None:
        key, value = memory_key(family, src, tgt, text), _value(text, translation)

        async def work(client: Any) -> bool:
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(key, value)  # no expiry
                pipe.set(IN_USE_KEY, "1")
                return bool((await pipe.execute())[0])

        await self._call(work)
        self._in_use = True

    async def delete(self, family: str, src: str, tgt: str, text: str) -> bool:
        key = memory_key(family, src, tgt, text)

        async def work(client: Any) -> int:
            return int(await client.delete(key))

        return bool(await self._call(work))
