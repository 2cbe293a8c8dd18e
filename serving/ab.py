"""What A/B testing remembers: which variant produced each translation, the references users post
back for them, and per-variant request counts and latencies; and the report computed from it.

Kept in Redis when the service has one (so every worker and replica sees the same numbers),
else in-process. Writing is best effort: a Redis failure loses a data point, never a request.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Protocol

from sacrebleu.metrics import BLEU, CHRF

from serving.redis_link import RedisLink

LATENCY_SAMPLES = 1000  # the most recent latencies kept per variant for the percentiles
BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class Served:
    """One translation as served: enough to score it once its reference arrives."""

    id: str
    pair: str
    variant: str
    hypothesis: str

    def dumps(self) -> str:
        return json.dumps([self.pair, self.variant, self.hypothesis], ensure_ascii=False)

    @classmethod
    def loads(cls, id: str, raw: str) -> Served:
        pair, variant, hypothesis = json.loads(raw)
        return cls(id, pair, variant, hypothesis)


class StoreUnavailable(Exception):
    """The A/B store cannot be read right now (Redis down)."""


class ABStore(Protocol):
    async def record(self, served: list[Served], pair: str, variant: str, latency_s: float) -> None:
        """One request: its translations (for later feedback) and its latency."""

    async def lookup(self, id: str) -> Served | None:
        """The translation with this id; raises StoreUnavailable if it cannot be looked up."""

    async def add_reference(self, served: Served, reference: str) -> None:
        """Keep (hypothesis, reference) for the variant; a second reference for an id replaces the first."""

    async def snapshot(self) -> dict[str, dict[str, Any]]:
        """pair -> variant -> {"requests", "latencies", "pairs": [(hyp, ref)]}."""


class MemoryABStore:
    def __init__(self, max_served: int = 100_000) -> None:
        self._served: dict[str, Served] = {}
        self._max_served = max_served
        self._requests: dict[tuple[str, str], int] = defaultdict(int)
        self._latencies: dict[tuple[str, str], deque[float]] = defaultdict(
            lambda: deque(maxlen=LATENCY_SAMPLES)
        )
        self._references: dict[tuple[str, str], dict[str, tuple[str, str]]] = defaultdict(dict)

    async def record(self, served: list[Served], pair: str, variant: str, latency_s: float) -> None:
        for item in served:
            self._served[item.id] = item
        while len(self._served) > self._max_served:  # dicts keep insertion order: drop the oldest
            del self._served[next(iter(self._served))]
        self._requests[pair, variant] += 1
        self._latencies[pair, variant].append(latency_s)

    async def lookup(self, id: str) -> Served | None:
        return self._served.get(id)

    async def add_reference(self, served: Served, reference: str) -> None:
        self._references[served.pair, served.variant][served.id] = (served.hypothesis, reference)

    async def snapshot(self) -> dict[str, dict[str, Any]]:
        report: dict[str, dict[str, Any]] = defaultdict(dict)
        for key in set(self._requests) | set(self._references):
            pair, variant = key
            report[pair][variant] = {
                "requests": self._requests.get(key, 0),
                "latencies": list(self._latencies.get(key, ())),
                "pairs": list(self._references.get(key, {}).values()),
            }
        return dict(report)


class RedisABStore:
    """Keys: nmt:ab:served:ID (JSON, with a TTL), nmt:ab:requests (hash "pair|variant" -> count),
    nmt:ab:latency:PAIR|VARIANT (list, newest first, trimmed), nmt:ab:refs:PAIR|VARIANT (hash id -> JSON)."""

    def __init__(self, link: RedisLink, ttl_s: int) -> None:
        self.link = link
        self.ttl_s = ttl_s

    async def record(self, served: list[Served], pair: str, variant: str, latency_s: float) -> None:
        key = f"{pair}|{variant}"

        async def work(client: Any) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for item in served:
                    pipe.set(f"nmt:ab:served:{item.id}", item.dumps(), ex=self.ttl_s)
                pipe.hincrby("nmt:ab:requests", key, 1)
                pipe.lpush(f"nmt:ab:latency:{key}", f"{latency_s:.6f}")
                pipe.ltrim(f"nmt:ab:latency:{key}", 0, LATENCY_SAMPLES - 1)
                await pipe.execute()

        await self.link.call("ab record", work, None)

    async def _checked(self, operation: str, work: Any) -> Any:
        missing = object()
        result = await self.link.call(operation, work, missing)
        if result is missing:
            raise StoreUnavailable("the A/B store (Redis) is unavailable; try again shortly")
        return result

    async def lookup(self, id: str) -> Served | None:
        async def work(client: Any) -> str | None:
            return await client.get(f"nmt:ab:served:{id}")

        raw = await self._checked("ab lookup", work)
        return None if raw is None else Served.loads(id, raw)

    async def add_reference(self, served: Served, reference: str) -> None:
        async def work(client: Any) -> None:
            await client.hset(
                f"nmt:ab:refs:{served.pair}|{served.variant}",
                served.id,
                json.dumps([served.hypothesis, reference], ensure_ascii=False),
            )

        await self._checked("ab feedback", work)

    async def snapshot(self) -> dict[str, dict[str, Any]]:
        async def work(client: Any) -> dict[str, dict[str, Any]]:
            requests = await client.hgetall("nmt:ab:requests")
            ref_keys = [key async for key in client.scan_iter(match="nmt:ab:refs:*", count=1000)]
            keys = set(requests) | {key.removeprefix("nmt:ab:refs:") for key in ref_keys}
            report: dict[str, dict[str, Any]] = defaultdict(dict)
            for key in keys:
                pair, variant = key.split("|", 1)
                latencies = await client.lrange(f"nmt:ab:latency:{key}", 0, -1)
                references = await client.hvals(f"nmt:ab:refs:{key}")
                report[pair][variant] = {
                    "requests": int(requests.get(key, 0)),
                    "latencies": [float(x) for x in latencies],
                    "pairs": [tuple(json.loads(raw)) for raw in references],
                }
            return dict(report)

        return await self._checked("ab report", work)


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def score_variant(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Corpus BLEU and chrF over the references received, each with a 95% bootstrap interval."""
    if not pairs:
        return {"references": 0, "bleu": None, "chrf": None}
    hypotheses = [hyp for hyp, _ in pairs]
    references = [[ref for _, ref in pairs]]
    result: dict[str, Any] = {"references": len(pairs)}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        score = metric.corpus_score(hypotheses, references, n_bootstrap=BOOTSTRAP_SAMPLES)
        result[name] = {
            "score": round(score.score, 2),
            "mean": round(float(score._mean), 2),  # sacreBLEU keeps the bootstrap estimate here
            "ci95": round(float(score._ci), 2),
            "signature": str(metric.get_signature()),
        }
    return result


def build_report(snapshot: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """pair -> variant -> requests, latency (ms) and scores."""
    report: dict[str, Any] = {}
    for pair, variants in sorted(snapshot.items()):
        report[pair] = {}
        for variant, data in sorted(variants.items()):
            latencies_ms = [1000 * x for x in data["latencies"]]
            report[pair][variant] = {
                "requests": data["requests"],
                "latency_ms": {
                    "mean": round(statistics.fmean(latencies_ms), 2) if latencies_ms else None,
                    "p50": _round(_percentile(latencies_ms, 50)),
                    "p95": _round(_percentile(latencies_ms, 95)),
                    "samples": len(latencies_ms),
                },
                **score_variant(data["pairs"]),
            }
    return report


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
