"""One Redis connection that fails soft: an error or a timeout is logged, counted and answered
with a fallback, and Redis is left alone for a while before the next try.

The cache and the A/B store both talk to Redis through `RedisLink.call`, so "Redis went away"
is handled in one place: requests slow down (they decode instead of hitting the cache), never fail.
redis-py reconnects by itself on the next command once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("nmt.serving.redis")

T = TypeVar("T")


class RedisLink:
    def __init__(
        self,
        url: str,
        timeout_s: float = 0.25,
        retry_s: float = 2.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.on_error = on_error or (lambda operation: None)
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        """False while a recent error keeps Redis benched."""
        return time.monotonic() >= self._down_until

    async def call(self, operation: str, work: Callable[[Any], Awaitable[T]], fallback: T) -> T:
        """`await work(client)`, or `fallback` if Redis is benched, fails or is slower than the timeout."""
        if not self.available:
            return fallback
        try:
            return await asyncio.wait_for(work(self.client), self.timeout_s * 2)
        except (RedisError, OSError, asyncio.TimeoutError) as error:
            if self.available:  # log once per outage, not once per request
                log.warning(
                    "redis %s failed (%s: %s); serving without Redis for %.1fs",
                    operation,
                    type(error).__name__,
                    error,
                    self.retry_s,
                )
            self._down_until = time.monotonic() + self.retry_s
            self.on_error(operation)
            # drop the pooled connections: after a restart of the server they are dead, and the
            # first command on each would fail again and bench Redis once more
            with contextlib.suppress(Exception):
                await self.client.connection_pool.disconnect()
            return fallback

    async def ping(self) -> bool:
        async def work(client: Any) -> Any:
            return await client.ping()

        return bool(await self.call("ping", work, False))

    async def close(self) -> None:
        await self.client.aclose()
