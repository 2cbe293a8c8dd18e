"""The service's long-lived parts, created in the app's lifespan and handed to endpoints by
`serving.deps`."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from serving.ab import ABStore
from serving.access import AccessControl
from serving.cache import TranslationCache
from serving.metrics import Metrics
from serving.redis_link import RedisLink
from serving.registry import Registry
from serving.settings import Settings


@dataclass
class Services:
    """Everything the endpoints reach through `serving.deps`, created in the lifespan."""

    settings: Settings
    metrics: Metrics
    registry: Registry
    cache: TranslationCache
    ab_store: ABStore
    access: AccessControl
    redis: RedisLink | None = None
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a best-effort coroutine (A/B bookkeeping) without making the response wait for it."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
