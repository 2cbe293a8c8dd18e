"""The FastAPI app: `create_app(settings)` builds it; its lifespan loads the models, starts one
micro-batcher per model and opens the cache (Redis or in-process) and the A/B store.

Run it with `nmt serve` (uvicorn, `serving.main:create_app` as a factory), or
`uvicorn --factory serving.main:create_app`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import torch
from fastapi import FastAPI

from serving import errors
from serving.ab import MemoryABStore, RedisABStore
from serving.access import AccessControl
from serving.cache import MemoryCache, RedisCache
from serving.detect import LanguageDetector
from serving.memory import LocalMemory, RedisMemory
from serving.metrics import Metrics
from serving.middleware import BodyLimit, BrowserCors, DirectRoutes, RequestMetrics
from serving.openapi import document
from serving.redis_link import RedisLink
from serving.registry import Registry
from serving.routers import (
    detect,
    feedback,
    files,
    glossary,
    libretranslate,
    memory,
    ops,
    page,
    stream,
    translate,
)
from serving.services import Services
from serving.settings import Settings

log = logging.getLogger("nmt.serving")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.decode_threads)  # ONNX Runtime's sessions take the same count
        executor = ThreadPoolExecutor(settings.slots, thread_name_prefix="nmt-decode")
        registry = await asyncio.get_running_loop().run_in_executor(
            executor, Registry.load, settings, executor, lambda model: _batch_observer(metrics, model)
        )
        for entry in registry.entries.values():
            entry.batcher.start()
        link = cache = ab_store = None
        if settings.redis_url:
            link = RedisLink(
                settings.redis_url,
                settings.redis_timeout_s,
                settings.redis_retry_s,
                settings.redis_max_connections,
                on_error=lambda operation: metrics.redis_errors.labels(operation).inc(),
            )
            if not await link.ping():
                log.warning(
                    "Redis at %s is not answering; serving uncached until it does",
                    _redacted(settings.redis_url),
                )
            cache, ab_store = (
                RedisCache(link, settings.cache_ttl_s),
                RedisABStore(link, settings.feedback_ttl_s),
            )
        access = AccessControl(
            settings.api_keys,
            settings.rate_limit_per_minute,
            settings.auth_failures_per_minute,
            settings.metrics_token,
            link,
            on_fallback=metrics.limits_fallbacks.inc,
            memory_keys=settings.memory_keys,
        )
        services = Services(
            settings=settings,
            metrics=metrics,
            registry=registry,
            cache=cache or MemoryCache(settings.cache_max_entries, settings.cache_ttl_s),
            ab_store=ab_store or MemoryABStore(settings.feedback_ttl_s),
            access=access,
            redis=link,
            detector=LanguageDetector(registry.languages()),
            memory=RedisMemory(link, cache.get_many)
            if link and cache
            else LocalMemory(settings.memory_max_entries),
        )
        app.state.services = services
        # the millions of objects loaded so far (torch, ONNX Runtime, models) live as long as the
        # process: keep them out of the garbage collector's full passes, which otherwise stall
        # every request for tens of milliseconds now and then (the p99 of cache hits)
        gc.collect()
        gc.freeze()
        log.info("serving %s with a %s cache", ", ".join(registry.entries), services.cache.kind)
        try:
            yield
        finally:
            for entry in registry.entries.values():
                await entry.batcher.stop()
            await services.ab_store.close()
            await services.cache.close()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="nmt translation service",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from serving/routers/page.py, offline
        redoc_url=None,
        description="Beam-search translation with recurrent (LSTM, GRU, RNN) and Transformer models; "
        "a LibreTranslate-compatible API beside the native one.",
    )
    app.state.metrics = metrics
    errors.install(app)
    routers = (
        translate.router,
        feedback.router,
        libretranslate.router,
        ops.router,
        glossary.router,
        files.router,
        detect.router,
        memory.router,
        stream.router,
    )
    for router in routers:
        app.include_router(router)
    page.install(app)
    endpoints = {getattr(route, "path", "") for router in routers for route in router.routes}
    app.add_middleware(
        DirectRoutes, endpoints={"/v1/translate": translate.translate, "/translate": libretranslate.translate}
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        BrowserCors,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", settings.client_id_header],
        expose_headers=["X-Model-Variant", "X-Model-Version", "Retry-After"],
        max_age=600,
    )
    app.add_middleware(RequestMetrics, metrics=metrics, endpoints=endpoints)
    document(app, settings)
    return app


def _batch_observer(metrics: Metrics, model: str):
    sentences_hist = metrics.batch_sentences.labels(model)
    seconds_hist = metrics.batch_seconds.labels(model)

    def observe(sentences: int, seconds: float) -> None:
        sentences_hist.observe(sentences)
        seconds_hist.observe(seconds)

    return observe


def _redacted(url: str) -> str:
    """The URL without its password (logs are read by more people than secrets are)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
