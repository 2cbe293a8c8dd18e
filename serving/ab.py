"""What A/B testing remembers: which variant produced each translation and for whom, the
references users post back for them, and per-variant request counts and latencies; and the
report computed from it.

Kept in Redis when the service has one (so every worker and replica sees the same numbers),
else in-process. Writing is best effort: a Redis failure loses a data point, never a request.
Requests are recorded without a Redis round trip of their own: records are buffered and written
in one pipeline every `FLUSH_S` (or every `FLUSH_RECORDS`).

Traffic that the split routed and traffic that pinned a model (`"model"` in the request) are
kept apart: a pinned request says nothing about how the split's variants compare, so the report
lists it under `pinned`, never among the split's variants. Everything expires after the
retention time (`NMT_FEEDBACK_TTL_S`): a served translation can get its reference that long,
and a reference counts in the report that long after its translation was served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import statistics
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import orjson
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import _bootstrap_resample, estimate_ci

from serving.redis_link import RedisLink

log = logging.getLogger("nmt.serving.ab")

LATENCY_SAMPLES = 1000  # the most recent latencies kept per variant for the percentiles
BOOTSTRAP_SAMPLES = 1000
FLUSH_S = 0.05
FLUSH_RECORDS = 512
DAY_S = 86400
SERVED_BUCKET_S = 600  # served records are kept in one Redis hash per 10 minutes

Group = Literal["split", "pinned"]


@dataclass(frozen=True)
class Served:
    """One translation as served: enough to score it once its reference arrives, and to know
    who may send that reference (`owner`: the API key's or the client's fingerprint)."""

    id: str
    pair: str
    variant: str
    hypothesis: str
    owner: str
    group: Group = "split"
    served_at: float = 0.0  # epoch seconds

    def dumps(self) -> str:
        # written by hand: dataclasses.asdict took a visible share of a cache hit's time
        fields = [self.pair, self.variant, self.hypothesis, self.owner, self.group, self.served_at]
        return orjson.dumps(fields).decode()

    @classmethod
    def loads(cls, id: str, raw: str) -> Served:
        pair, variant, hypothesis, owner, group, served_at = json.loads(raw)
        return cls(id, pair, variant, hypothesis, owner, group, served_at)


@dataclass(frozen=True)
class Request:
    """One translation request, as the report counts it."""

    group: Group
    pair: str
    variant: str
    latency_s: float
    served: list[Served]


class _RandomHex:
    """Random hex digits from the OS's CSPRNG (as `secrets.token_hex`), drawn 4 KiB at a time:
    a system call per translation id was a visible share of a cache hit's time."""

    def __init__(self) -> None:
        self._pool = ""

    def take(self, digits: int) -> str:
        if len(self._pool) < digits:
            self._pool = os.urandom(4096).hex()
        taken, self._pool = self._pool[:digits], self._pool[digits:]
        return taken


_random_hex = _RandomHex()


def new_id(now: float) -> str:
    """A translation id: 32 hex digits, the first 8 the 10-minute slot it was served in (so the
    Redis store finds its record's hash without a key per translation), the rest random."""
    return f"{int(now // SERVED_BUCKET_S):08x}{_random_hex.take(24)}"


def _slot(id: str) -> int | None:
    """The slot of an id from `new_id`, None for anything else."""
    if len(id) != 32:
        return None
    try:
        return int(id[:8], 16)
    except ValueError:
        return None


class StoreUnavailable(Exception):
    """The A/B store cannot be read right now (Redis down)."""


class ABStore(Protocol):
    def record(self, request: Request) -> None:
        """Remember one request and its translations (for later feedback); never waits."""

    async def lookup(self, id: str) -> Served | None:
        """The translation with this id, None once unknown or expired; raises StoreUnavailable."""

    async def add_reference(self, served: Served, reference: str) -> None:
        """Keep (hypothesis, reference); a second reference for an id replaces the first."""

    async def snapshot(self) -> dict[Group, dict[str, dict[str, dict[str, Any]]]]:
        """group -> pair -> variant -> {"requests", "latencies", "pairs": [(hyp, ref)]}."""

    async def close(self) -> None:
        """Write what is buffered."""


def _empty() -> dict[str, Any]:
    return {"requests": 0, "latencies": [], "pairs": []}


class MemoryABStore:
    def __init__(self, retention_s: float, max_served: int = 100_000) -> None:
        self.retention_s = retention_s
        self._served: dict[str, Served] = {}
        self._max_served = max_served
        self._requests: dict[tuple[Group, str, str], int] = defaultdict(int)
        self._latencies: dict[tuple[Group, str, str], deque[float]] = defaultdict(
            lambda: deque(maxlen=LATENCY_SAMPLES)
        )
        # (group, pair, variant) -> id -> (served at, hypothesis, reference)
        self._references: dict[tuple[Group, str, str], dict[str, tuple[float, str, str]]] = defaultdict(dict)

    def record(self, request: Request) -> None:
        for item in request.served:
            self._served[item.id] = item
        while len(self._served) > self._max_served:  # dicts keep insertion order: drop the oldest
            del self._served[next(iter(self._served))]
        key = (request.group, request.pair, request.variant)
        self._requests[key] += 1
        self._latencies[key].append(request.latency_s)

    async def lookup(self, id: str) -> Served | None:
        served = self._served.get(id)
        if served is None or served.served_at < time.time() - self.retention_s:
            return None
        return served

    async def add_reference(self, served: Served, reference: str) -> None:
        key = (served.group, served.pair, served.variant)
        self._references[key][served.id] = (served.served_at, served.hypothesis, reference)

    async def snapshot(self) -> dict[Group, dict[str, dict[str, dict[str, Any]]]]:
        oldest = time.time() - self.retention_s
        report: dict[Group, dict[str, dict[str, dict[str, Any]]]] = {"split": {}, "pinned": {}}
        for key in set(self._requests) | set(self._references):
            group, pair, variant = key
            references = self._references.get(key, {})
            for id in [id for id, (at, _, _) in references.items() if at < oldest]:
                del references[id]
            report[group].setdefault(pair, {})[variant] = {
                "requests": self._requests.get(key, 0),
                "latencies": list(self._latencies.get(key, ())),
                "pairs": [(hyp, ref) for _, hyp, ref in references.values()],
            }
        return report

    async def close(self) -> None:
        return None


class RedisABStore:
    """Keys (all expire after the retention time):
    nmt:ab:served:SLOT          hash id -> the Served record (JSON), one per 10-minute slot
    nmt:ab:requests             hash "group|pair|variant" -> request count
    nmt:ab:latency:G|P|V        list of recent latencies, newest first, trimmed
    nmt:ab:refs:G|P|V:DAY       hash id -> [hypothesis, reference], by the day the translation was
                                served, so whole days expire together and a re-posted reference
                                lands in the same hash as the first.
    One flush writes any number of requests with a handful of commands."""

    def __init__(self, link: RedisLink, retention_s: int) -> None:
        self.link = link
        self.retention_s = retention_s
        self._pending: list[Request] = []
        self._flusher: asyncio.Task[None] | None = None
        self._full = asyncio.Event()

    def record(self, request: Request) -> None:
        self._pending.append(request)
        if len(self._pending) >= FLUSH_RECORDS:
            self._full.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._full.wait(), FLUSH_S)
        self._full.clear()
        await self._flush()

    async def _flush(self) -> None:
        requests, self._pending = self._pending, []
        if not requests:
            return
        served: dict[int, dict[str, str]] = defaultdict(dict)
        latencies: dict[str, list[str]] = defaultdict(list)
        for request in requests:
            for item in request.served:
                served[_slot(item.id) or 0][item.id] = item.dumps()
            latencies[f"{request.group}|{request.pair}|{request.variant}"].append(f"{request.latency_s:.6f}")

        async def work(client: Any) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for slot, records in served.items():
                    pipe.hset(f"nmt:ab:served:{slot}", mapping=records)
                    pipe.expireat(f"nmt:ab:served:{slot}", (slot + 1) * SERVED_BUCKET_S + self.retention_s)
                for key, values in latencies.items():
                    pipe.hincrby("nmt:ab:requests", key, len(values))
                    pipe.lpush(f"nmt:ab:latency:{key}", *values)
                    pipe.ltrim(f"nmt:ab:latency:{key}", 0, LATENCY_SAMPLES - 1)
                    pipe.expire(f"nmt:ab:latency:{key}", self.retention_s)
                pipe.expire("nmt:ab:requests", self.retention_s)
                await pipe.execute()

        await self.link.call("ab record", work, None)

    async def _checked(self, operation: str, work: Any) -> Any:
        missing = object()
        result = await self.link.call(operation, work, missing)
        if result is missing:
            raise StoreUnavailable("the A/B store (Redis) is unavailable; try again shortly")
        return result

    async def lookup(self, id: str) -> Served | None:
        slot = _slot(id)
        if slot is None or (slot + 1) * SERVED_BUCKET_S + self.retention_s < time.time():
            return None

        async def work(client: Any) -> str | None:
            return await client.hget(f"nmt:ab:served:{slot}", id)

        raw = await self._checked("ab lookup", work)
        try:
            return None if raw is None else Served.loads(id, raw)
        except (TypeError, ValueError):  # written by an older version: it has no owner to check
            return None

    async def add_reference(self, served: Served, reference: str) -> None:
        day = int(served.served_at // DAY_S)
        key = f"nmt:ab:refs:{served.group}|{served.pair}|{served.variant}:{day}"

        async def work(client: Any) -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hset(key, served.id, json.dumps([served.hypothesis, reference], ensure_ascii=False))
                pipe.expireat(key, (day + 1) * DAY_S + self.retention_s)
                await pipe.execute()

        await self._checked("ab feedback", work)

    async def snapshot(self) -> dict[Group, dict[str, dict[str, dict[str, Any]]]]:
        oldest_day = int((time.time() - self.retention_s) // DAY_S)

        async def work(client: Any) -> dict[Group, dict[str, dict[str, dict[str, Any]]]]:
            report: dict[Group, dict[str, dict[str, dict[str, Any]]]] = {"split": {}, "pinned": {}}

            def cell(key: str) -> dict[str, Any]:
                group, pair, variant = key.split("|", 2)
                return report[group].setdefault(pair, {}).setdefault(variant, _empty())  # type: ignore[index]

            for key, count in (await client.hgetall("nmt:ab:requests")).items():
                cell(key)["requests"] = int(count)
                latencies = await client.lrange(f"nmt:ab:latency:{key}", 0, -1)
                cell(key)["latencies"] = [float(x) for x in latencies]
            async for name in client.scan_iter(match="nmt:ab:refs:*", count=1000):
                key, _, day = name.removeprefix("nmt:ab:refs:").rpartition(":")
                if int(day) < oldest_day:
                    continue
                cell(key)["pairs"] += [tuple(json.loads(raw)) for raw in await client.hvals(name)]
            return report

        return await self._checked("ab report", work)

    async def close(self) -> None:
        if self._flusher is not None:
            self._full.set()
            with contextlib.suppress(Exception):
                await self._flusher
        await self._flush()


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def score_variant(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Corpus BLEU and chrF over the references received, each with a 95% bootstrap interval.

    The bootstrap is sacreBLEU's own resampling; its mean and interval are taken with numpy,
    because sacreBLEU's `Score.estimate_ci` fails (`statistics.mean` of mixed float and float32)
    as soon as one resample scores exactly 0."""
    if not pairs:
        return {"references": 0, "bleu": None, "chrf": None}
    hypotheses = [hyp for hyp, _ in pairs]
    references = [[ref for _, ref in pairs]]
    result: dict[str, Any] = {"references": len(pairs)}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        stats = metric._extract_corpus_statistics(hypotheses, references)
        score = metric._aggregate_and_compute(stats)
        _, samples = _bootstrap_resample(stats, metric, BOOTSTRAP_SAMPLES)
        mean, ci = estimate_ci(np.array([float(sample.score) for sample in samples]))
        result[name] = {
            "score": round(float(score.score), 2),
            "mean": round(float(mean), 2),
            "ci95": round(float(ci), 2),
            "signature": str(metric.get_signature()),
        }
    return result


def build_report(snapshot: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
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
