"""A small key-value store for what the service keeps on a caller's behalf (stored glossaries,
translated files): Redis when the service has one (shared by every replica), else this process's
memory. Values are strings; entries may expire.

Redis errors are not silent here, unlike the cache's: a write or read that fails raises a 503,
since the caller asked for something to be kept.
"""

from __future__ import annotations

import time
from typing import Any

from serving.errors import ApiError
from serving.redis_link import RedisLink

_FAILED = object()


class Store:
    def __init__(self, prefix: str, link: RedisLink | None = None, max_entries: int = 10_000) -> None:
        self.prefix = prefix
        self.link = link
        self.max_entries = max_entries
        self._memory: dict[str, tuple[str, float]] = {}  # key -> (value, expiry; inf: none)
        self.recent: dict[
            str, tuple[Any, float]
        ] = {}  # what a user of the store keeps read (serving/terms.py)

    async def get(self, key: str) -> str | None:
        if self.link is not None:

            async def work(client: Any) -> Any:
                return await client.get(self.prefix + key)

            return self._checked(await self.link.call("store", work, _FAILED))
        value, expires = self._memory.get(key, (None, 0.0))
        if value is None or expires < time.monotonic():
            self._memory.pop(key, None)
            return None
        return value

    async def set(self, key: str, value: str, ttl_s: int | None = None) -> None:
        if self.link is not None:

            async def work(client: Any) -> Any:
                return await client.set(self.prefix + key, value, ex=ttl_s)

            self._checked(await self.link.call("store", work, _FAILED))
            return
        now = time.monotonic()
        if len(self._memory) >= self.max_entries:  # expired first, then the oldest
            for old in [k for k, (_, expires) in self._memory.items() if expires < now]:
                del self._memory[old]
            while len(self._memory) >= self.max_entries:
                del self._memory[next(iter(self._memory))]
        self._memory[key] = (value, now + ttl_s if ttl_s else float("inf"))

    async def delete(self, key: str) -> bool:
        """Whether there was something to delete."""
        if self.link is not None:

            async def work(client: Any) -> Any:
                return await client.delete(self.prefix + key)

            return bool(self._checked(await self.link.call("store", work, _FAILED)))
        return self._memory.pop(key, None) is not None

    @staticmethod
    def _checked(result: Any) -> Any:
        if result is _FAILED:
            raise ApiError(503, None, "the store (Redis) is not answering; try again", "unavailable")
        return result
