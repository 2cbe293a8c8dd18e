"""Dynamic micro-batching: concurrent requests for one model are decoded together.

Each request hands its sentences to `MicroBatcher.translate` and awaits them. One worker task per
model gathers the queued requests into a batch (until `max_sentences` or `max_tokens` is reached,
or `max_wait_s` has passed since the oldest one arrived), runs the decode in a thread so the event
loop keeps serving (health checks, cache hits), and hands each request its own results. Requests
with different decoding options share the gathering but are decoded as separate groups.

While a batch decodes, the next one queues up. Under load (requests were waiting when the last
decode finished), the clients whose answers just went out send their next sentences over the
following milliseconds, so the next gathering lingers for them: a tenth of the last decode's time,
at most `max_linger_s`, at least `max_wait_s`. Without that, batches alternate between the
requests that queued during a decode and those that come back after it, each half as big. A
near-idle service waits `max_wait_s` from the first request's arrival.

With `slots` > 1, that many gatherings run at once, each decoding its own batch in its own executor
thread (give the executor as many threads, and each decode 1/slots of the cores). On a few CPU
cores this beats one batch on all cores: a beam search ends with a few long sentences left, steps
too small to keep several cores busy, and the other slot's batch fills the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from nmt.config import SearchConfig
from nmt.translator import Translation

log = logging.getLogger("nmt.serving.batcher")

TranslateFn = Callable[[list[str], SearchConfig], list[list[Translation]]]


@dataclass
class _Job:
    sentences: list[str]
    search: SearchConfig
    tokens: int
    future: asyncio.Future[list[list[Translation]]]
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    def __init__(
        self,
        translate: TranslateFn,
        executor: Executor,
        count_tokens: Callable[[str], int],
        max_sentences: int = 32,
        max_tokens: int = 4096,
        max_wait_s: float = 0.005,
        max_linger_s: float = 0.05,
        on_batch: Callable[[int, float], None] | None = None,
        slots: int = 1,
    ) -> None:
        self._translate = translate
        self._executor = executor
        self._count_tokens = count_tokens
        self.max_sentences = max_sentences
        self.max_tokens = max_tokens
        self.max_wait_s = max_wait_s
        self.max_linger_s = max_linger_s
        self._last_decode_s = 0.0
        self._busy = False  # requests were queued when the last decode finished
        self._on_batch = on_batch or (lambda sentences, seconds: None)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.slots = slots
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._run()) for _ in range(self.slots)]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the service is shutting down"))

    async def translate(self, sentences: list[str], search: SearchConfig) -> list[list[Translation]]:
        """An n-best list per sentence, decoded in whichever batch the sentences land in."""
        if not sentences:
            return []
        tokens = sum(self._count_tokens(s) + 1 for s in sentences)
        job = _Job(sentences, search, tokens, asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.future

    async def _gather(self) -> list[_Job]:
        """The oldest job plus whatever else arrives in time and fits."""
        jobs = [await self._queue.get()]
        sentences, tokens = len(jobs[0].sentences), jobs[0].tokens
        if self._busy:
            deadline = time.monotonic() + max(
                self.max_wait_s, min(self.max_linger_s, self._last_decode_s / 10)
            )
        else:
            deadline = jobs[0].arrived + self.max_wait_s
        while sentences < self.max_sentences and tokens < self.max_tokens:
            if self._queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            jobs.append(job)
            sentences += len(job.sentences)
            tokens += job.tokens
        return jobs

    def _decode(self, jobs: list[_Job]) -> list[list[list[Translation]] | Exception]:
        """Runs in the executor: one decode per distinct set of search options. A group that fails
        fails its own requests only."""
        groups: dict[str, list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(job.search.model_dump_json(), []).append(index)
        results: list[list[list[Translation]] | Exception] = [[] for _ in jobs]
        for indices in groups.values():
            sentences = [s for i in indices for s in jobs[i].sentences]
            try:
                nbest = self._translate(sentences, jobs[indices[0]].search)
            except Exception as error:
                log.exception("decoding %d sentences of %d requests failed", len(sentences), len(indices))
                for i in indices:
                    results[i] = error
                continue
            start = 0
            for i in indices:
                results[i] = nbest[start : start + len(jobs[i].sentences)]
                start += len(jobs[i].sentences)
        return results

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            jobs = [job for job in jobs if not job.future.done()]  # a client that went away
            if not jobs:
                continue
            started = time.perf_counter()
            results = await loop.run_in_executor(self._executor, self._decode, jobs)
            self._last_decode_s = time.perf_counter() - started
            self._busy = not self._queue.empty()
            self._on_batch(sum(len(job.sentences) for job in jobs), self._last_decode_s)
            for job, result in zip(jobs, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
