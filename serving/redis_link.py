"""The service's Redis connections, failing soft: an error or a timeout is logged, counted and
answered with a fallback, and Redis is left alone for a while before the next try.

The cache, the A/B store and the shared limits all talk to Redis through `RedisLink.call`, so
"Redis went away" is handled in one place: requests slow down (they decode instead of hitting
the cache), never fail.

- The pool is bounded and blocking (`max_connections`): under load, a request waits up to the
  timeout for a free connection instead of opening connections without bound; a request that
  gets none treats Redis as a miss, without benching it (Redis is busy, not down).
- An error never tears down connections other requests are using: only idle pooled connections
  are dropped (after a server restart they are all dead). A command that fails on a dead
  connection is retried once on a new one, so a restarted server is used again at once.
- Any exception from Redis or the client library ends as the fallback: a failing cache is a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:  # redis-py depends on async-timeout there
    from async_timeout import timeout

log = logging.getLogger("nmt.serving.redis")

T = TypeVar("T")

_POOL_EXHAUSTED = "No connection available."  # redis-py's message when the pool wait times out


class RedisLink:
    def __init__(
        self,
        url: str,
        timeout_s: float = 0.25,
        retry_s: float = 2.0,
        max_connections: int = 64,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,  # the longest wait for a free connection
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        self.client = aioredis.Redis(connection_pool=self.pool)
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.on_error = on_error or (lambda operation: None)
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        """False while a recent error keeps Redis benched."""
        return time.monotonic() >= self._down_until

    async def call(self, operation: str, work: Callable[[Any], Awaitable[T]], fallback: T) -> T:
        """`await work(client)`, or `fallback` if Redis is benched, fails or is too slow."""
        if not self.available:
            return fallback
        try:
            # a pool wait, a command and its one retry each have the timeout: bound them together
            # (a timeout context, not wait_for: no task per call)
            async with timeout(self.timeout_s * 3):
                return await work(self.client)
        except Exception as error:
            self.on_error(operation)
            if isinstance(error, RedisConnectionError) and str(error) == _POOL_EXHAUSTED:
                return fallback  # every connection is busy: a miss, but Redis is up
            await self._bench(operation, error)
            return fallback

    async def _bench(self, operation: str, error: Exception) -> None:
        expected = isinstance(error, (RedisError, OSError, asyncio.TimeoutError))
        if self.available:  # log once per outage, not once per request
            log.log(
                logging.WARNING if expected else logging.ERROR,
                "redis %s failed (%s: %s); serving without Redis for %.1fs",
                operation,
                type(error).__name__,
                error,
                self.retry_s,
                exc_info=not expected,
            )
        self._down_until = time.monotonic() + self.retry_s
        # idle connections are dead if the server restarted; those in use are their users' business
        with contextlib.suppress(Exception):
            await self.pool.disconnect(inuse_connections=False)

    async def ping(self) -> bool:
        async def work(client: Any) -> Any:
            return await client.ping()

        return bool(await self.call("ping", work, False))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()
            await self.pool.disconnect()
