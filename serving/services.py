"""The service's long-lived parts, created in the app's lifespan and handed to endpoints by
`serving.deps`."""

from __future__ import annotations

from dataclasses import dataclass

from serving.ab import ABStore
from serving.access import AccessControl
from serving.cache import TranslationCache
from serving.detect import LanguageDetector
from serving.memory import TranslationMemory
from serving.metrics import Metrics
from serving.redis_link import RedisLink
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store


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
    glossaries: Store | None = None  # the glossary stored per caller (serving/terms.py)
    files: Store | None = None  # translated files until they are downloaded (serving/files.py)
    detector: LanguageDetector | None = None  # source languages, for /detect and source "auto"
    memory: TranslationMemory | None = None  # approved translations (serving/memory.py)

    def __post_init__(self) -> None:
        self.glossaries = self.glossaries or Store("nmt:glossary:", self.redis)
        self.files = self.files or Store("nmt:file:", self.redis)
