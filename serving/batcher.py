"""Dynamic micro-batching with a bounded cost per batch, fair turns and backpressure.

Each request hands its encoded sentences to `MicroBatcher.translate` and awaits them. Worker tasks
(one per decode slot) form batches from the waiting requests and decode them in an executor
thread, so the event loop keeps serving (health checks, cache hits).

- **Bounded batches.** A batch holds at most `max_sentences` sentences and `max_tokens` padded
  source tokens (sentences x the longest). A request bigger than that is split: its sentences go
  out over several batches, so no batch, and no wait behind one, grows with a request's size.
- **Fair turns.** A batch starts from the request that has had the fewest sentences decoded so
  far (then the oldest), and while any request has had less than a batch's worth, batches are
  made of such "light" requests only. A one-sentence request that arrives while a 5,000-sentence
  job runs is therefore decoded in the very next batch, alone or with other light requests, not
  behind the job and not padded out with its long sentences. (A job is only starved while light
  requests use every slot; its deadline then answers it.)
- **Backpressure.** At most `max_queued` sentences wait per model; a request that would go over
  is refused at once with `QueueFull` (the service answers 503 with Retry-After) instead of
  waiting without bound. A lone request is always taken, however big: it cannot starve anyone.
- **Abandoned work is dropped.** A caller that stops waiting (its client left, or its deadline
  passed) cancels `translate`; its sentences not yet handed to a decode are withdrawn.
- **Batching window.** A batch is formed `max_wait_s` after its oldest request arrived, or at once
  when a full batch is waiting. Under load (requests were waiting when the last decode finished)
  the window lingers a tenth of the last decode's time (at most `max_linger_s`), for the clients
  whose answers just went out and who send their next sentences over the following milliseconds.

With `slots` > 1, that many batches decode at once, each in its own executor thread (give the
executor as many threads, and each decode 1/slots of the cores); the work waiting is shared out
between the slots that are idle. On a few CPU cores this beats
one batch on all cores: a beam search ends with a few long sentences left, steps too small to keep
several cores busy, and the other slot's batch fills the gap.
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

# (sentences' ids, search options, alignments) -> an n-best list per sentence
DecodeFn = Callable[[list[list[int]], SearchConfig, bool], list[list[Translation]]]


class ShuttingDown(Exception):
    """The service stopped before these sentences were decoded."""


class QueueFull(Exception):
    """Too many sentences are waiting; try again after `retry_after_s`."""

    def __init__(self, queued: int, retry_after_s: float) -> None:
        super().__init__(f"{queued} sentences are waiting to be translated")
        self.queued = queued
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class _Job:
    ids: list[list[int]]  # source token ids per sentence
    search: SearchConfig
    alignments: bool  # whether the translations carry alignments
    options: str  # search options and alignments, as JSON: jobs decode together only when these match
    future: asyncio.Future[list[list[Translation]]]
    results: list[list[Translation]] = field(default_factory=list)
    arrived: float = field(default_factory=time.monotonic)
    handed: int = 0  # sentences handed to a decode so far (they go out in order)
    decoded: int = 0

    @property
    def waiting(self) -> int:
        return len(self.ids) - self.handed


@dataclass
class _Piece:
    """Sentences [start, end) of one job, in one batch."""

    job: _Job
    start: int
    end: int


class MicroBatcher:
    def __init__(
        self,
        decode: DecodeFn,
        executor: Executor,
        max_sentences: int = 32,
        max_tokens: int = 4096,
        max_wait_s: float = 0.005,
        max_linger_s: float = 0.05,
        max_queued: int = 4096,
        on_batch: Callable[[int, float], None] | None = None,
        slots: int = 1,
    ) -> None:
        self._decode = decode
        self._executor = executor
        self.max_sentences = max_sentences
        self.max_tokens = max_tokens
        self.max_wait_s = max_wait_s
        self.max_linger_s = max_linger_s
        self.max_queued = max_queued
        self.slots = slots
        self._on_batch = on_batch or (lambda sentences, seconds: None)
        self._jobs: list[_Job] = []  # jobs with sentences not yet handed out, in arrival order
        self._queued = 0  # their sentences not yet handed out
        self._wakeup = asyncio.Event()
        self._last_decode_s = 0.0
        self._busy = False  # requests were waiting when the last decode finished
        self._rate = 0.0  # sentences per second per slot, a moving average (for Retry-After)
        self._workers: list[asyncio.Task[None]] = []
        self._idle = 0  # workers waiting for a batch (not decoding)
        self._in_flight: set[_Job] = set()

    @property
    def queued(self) -> int:
        """Sentences waiting for a decode."""
        return self._queued

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._run()) for _ in range(self.slots)]

    async def stop(self) -> None:
        """Stop the workers; every request still waiting is failed."""
        for worker in self._workers:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        for job in [*self._jobs, *self._in_flight]:
            if not job.future.done():
                job.future.set_exception(ShuttingDown("the service is shutting down"))
        self._jobs.clear()
        self._queued = 0

    def retry_after_s(self) -> float:
        """About how long the sentences waiting now take to decode."""
        if self._rate <= 0:
            return 1.0
        return max(1.0, min(60.0, self._queued / (self._rate * self.slots)))

    async def translate(
        self, ids: list[list[int]], search: SearchConfig, alignments: bool = False
    ) -> list[list[Translation]]:
        """An n-best list per sentence (with alignments if asked). Raises QueueFull when the queue
        has no room for them; cancelling the call withdraws the sentences not yet decoding."""
        if not ids:
            return []
        if self._queued and self._queued + len(ids) > self.max_queued:
            raise QueueFull(self._queued, self.retry_after_s())
        options = search.model_dump_json() + (" alignments" if alignments else "")
        job = _Job(ids, search, alignments, options, asyncio.get_running_loop().create_future())
        job.results = [[] for _ in ids]
        self._jobs.append(job)
        self._queued += len(ids)
        self._wakeup.set()
        try:
            return await job.future
        finally:
            self._withdraw(job)

    def _withdraw(self, job: _Job) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
            self._queued -= job.waiting
        job.handed = len(job.ids)

    async def _window(self) -> None:
        """Wait until a batch should be formed from the jobs waiting."""
        while not self._jobs:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._busy:
            linger = max(self.max_wait_s, min(self.max_linger_s, self._last_decode_s / 10))
            deadline = time.monotonic() + linger
        else:
            deadline = min(job.arrived for job in self._jobs) + self.max_wait_s
        while self._queued < self.max_sentences:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _take(self) -> list[_Piece]:
        """The next batch: pieces of the least-served jobs with the same search options, and no
        more than this worker's share of what waits when other slots are idle too (32 waiting
        sentences and two idle slots make two batches of 16 decoding side by side, not one of 32
        beside an idle slot)."""
        share = min(self.max_sentences, -(-self._queued // max(1, self._idle)))
        light = [job for job in self._jobs if job.handed < self.max_sentences]
        candidates = sorted(light or self._jobs, key=lambda job: (job.handed, job.arrived))
        options = candidates[0].options
        pieces: list[_Piece] = []
        count = longest = 0
        for job in candidates:
            if job.options != options:
                continue
            start = end = job.handed
            while end < len(job.ids) and count < share:
                length = len(job.ids[end]) + 1  # with EOS
                if count and (count + 1) * max(longest, length) > self.max_tokens:
                    break
                longest, count, end = max(longest, length), count + 1, end + 1
            if end > start:
                pieces.append(_Piece(job, start, end))
                job.handed = end
                self._queued -= end - start
                if not job.waiting:
                    self._jobs.remove(job)
            if end < len(job.ids):  # the batch is full
                break
        return pieces

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._idle += 1
            try:
                await self._window()
                if not self._jobs:  # another slot took them
                    continue
                pieces = self._take()
            finally:
                self._idle -= 1
            ids = [s for piece in pieces for s in piece.job.ids[piece.start : piece.end]]
            jobs = {piece.job for piece in pieces}
            self._in_flight |= jobs
            started = time.perf_counter()
            try:
                first = pieces[0].job
                nbest = await loop.run_in_executor(
                    self._executor, self._decode, ids, first.search, first.alignments
                )
            except Exception as error:
                log.exception("decoding %d sentences of %d requests failed", len(ids), len(jobs))
                for job in jobs:
                    self._fail(job, error)
                continue
            finally:
                self._in_flight -= jobs
            self._record(len(ids), time.perf_counter() - started)
            self._deliver(pieces, nbest)

    def _record(self, sentences: int, seconds: float) -> None:
        self._last_decode_s = seconds
        self._busy = bool(self._jobs)
        rate = sentences / max(seconds, 1e-6)
        self._rate = rate if self._rate <= 0 else 0.8 * self._rate + 0.2 * rate
        self._on_batch(sentences, seconds)

    def _deliver(self, pieces: list[_Piece], nbest: list[list[Translation]]) -> None:
        offset = 0
        for piece in pieces:
            size = piece.end - piece.start
            job = piece.job
            job.results[piece.start : piece.end] = nbest[offset : offset + size]
            job.decoded += size
            offset += size
            if job.decoded == len(job.ids) and not job.future.done():
                job.future.set_result(job.results)

    def _fail(self, job: _Job, error: Exception) -> None:
        self._withdraw(job)
        if not job.future.done():
            job.future.set_exception(error)
