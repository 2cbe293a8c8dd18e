"""Prometheus metrics, one registry per app (so tests and workers never share global state).

Labels are bounded: endpoint templates, status codes, model names and variants. Never client
IPs or API keys, which would grow without limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class VariantMetrics:
    """The labelled children of one model variant, looked up once (`labels()` takes a lock)."""

    translations: Counter
    latency: Histogram
    cache_hits: Counter
    cache_misses: Counter


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("nmt_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "nmt_request_seconds", "HTTP request latency", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.translations = Counter("nmt_translations", "texts translated", ["model", "variant"], registry=r)
        self.translate_latency = Histogram(
            "nmt_translate_seconds",
            "translation request latency per model variant",
            ["model", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter(
            "nmt_cache_hits", "sentences served from the cache", ["model", "variant"], registry=r
        )
        self.cache_misses = Counter("nmt_cache_misses", "sentences decoded", ["model", "variant"], registry=r)
        self.redis_errors = Counter(
            "nmt_redis_errors", "failed or timed-out Redis calls", ["operation"], registry=r
        )
        self.limits_fallbacks = Counter(
            "nmt_limits_fallbacks",
            "rate-limit and failed-auth checks done in-process because Redis was unavailable",
            registry=r,
        )
        self.batch_sentences = Histogram(
            "nmt_batch_sentences", "sentences per decoded batch", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "nmt_batch_seconds", "decode time per batch", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )

    @cache  # noqa: B019 (one Metrics per app, a handful of variants: the cache cannot grow)
    def variant(self, model: str, variant: str) -> VariantMetrics:
        return VariantMetrics(
            self.translations.labels(model, variant),
            self.translate_latency.labels(model, variant),
            self.cache_hits.labels(model, variant),
            self.cache_misses.labels(model, variant),
        )
