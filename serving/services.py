"""The service's long-lived parts, created in the app's lifespan and handed to endpoints by
`serving.deps`."""

from __future__ import annotations

from dataclasses import dataclass

from serving.ab import ABStore
from serving.access import AccessControl
from serving.cache import TranslationCache
from serving.memory import TranslationMemory
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
    memory: TranslationMemory | None = None  # approved translations (serving/memory.py)
