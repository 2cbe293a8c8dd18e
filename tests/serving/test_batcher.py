"""The micro-batcher on a plain function standing in for the model: who gets batched with whom,
how big jobs are split and take turns, and what happens to work nobody waits for."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nmt.config import SearchConfig
from nmt.translator import Translation
from serving.batcher import MicroBatcher, QueueFull, ShuttingDown


def ids(text: str) -> list[int]:
    """A "sentence" of one token per character."""
    return [ord(c) for c in text]


class Recorder:
    """Translates by upper-casing; records each call's sentences and options."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[list[str], int]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(
        self, batch: list[list[int]], search: SearchConfig, alignments: bool = False
    ) -> list[list[Translation]]:
        time.sleep(self.delay)
        sentences = ["".join(map(chr, tokens)) for tokens in batch]
        with self.lock:
            self.calls.append((sentences, search.beam_size))
        if "boom" in sentences:
            raise RuntimeError("decoder failed")
        return [[Translation(s.upper(), -1.0, -1.0)] for s in sentences]


def batched(recorder: Recorder, jobs, **limits):
    async def scenario():
        batcher = MicroBatcher(recorder, ThreadPoolExecutor(1), **limits)
        batcher.start()
        results = await asyncio.gather(
            *(batcher.translate([ids(s) for s in sentences], o) for sentences, o in jobs),
            return_exceptions=True,
        )
        await batcher.stop()
        return results

    return asyncio.run(scenario())


def texts(result) -> list[str]:
    return [nbest[0].text for nbest in result]


BEAM5, BEAM2 = SearchConfig(beam_size=5), SearchConfig(beam_size=2)


def test_concurrent_requests_share_one_decode_and_get_their_own_results():
    recorder = Recorder()
    jobs = [([f"s{i}a", f"s{i}b"], BEAM5) for i in range(5)]
    results = batched(recorder, jobs, max_wait_s=0.05)
    assert [texts(r) for r in results] == [[f"S{i}A", f"S{i}B"] for i in range(5)]
    assert len(recorder.calls) == 1 and len(recorder.calls[0][0]) == 10


def test_limits_close_a_batch():
    recorder = Recorder()
    results = batched(recorder, [([f"s{i}"], BEAM5) for i in range(7)], max_sentences=3, max_wait_s=0.05)
    assert len(results) == 7
    assert [len(sentences) for sentences, _ in recorder.calls] == [3, 3, 1]
    recorder = Recorder()
    batched(recorder, [(["abc"], BEAM5) for _ in range(4)], max_tokens=8, max_wait_s=0.05)
    assert [len(sentences) for sentences, _ in recorder.calls] == [2, 2]  # 4 tokens each with EOS


def test_a_job_over_the_budget_is_split_and_keeps_its_order():
    recorder = Recorder()
    sentences = [f"s{i:02d}" for i in range(10)]
    (result,) = batched(recorder, [(sentences, BEAM5)], max_sentences=4, max_wait_s=0.01)
    assert texts(result) == [s.upper() for s in sentences]
    assert [len(batch) for batch, _ in recorder.calls] == [4, 4, 2]


def test_different_search_options_are_decoded_apart():
    recorder = Recorder()
    batched(recorder, [(["a"], BEAM5), (["b"], BEAM2), (["c"], BEAM5)], max_wait_s=0.05)
    assert sorted(recorder.calls) == [(["a", "c"], 5), (["b"], 2)]


def test_a_failed_decode_fails_its_batch_only():
    recorder = Recorder()
    results = batched(recorder, [(["boom"], BEAM5), (["fine"], BEAM2)], max_wait_s=0.05)
    assert isinstance(results[0], RuntimeError)
    assert texts(results[1]) == ["FINE"]


def test_a_small_request_takes_the_next_turn_alone_while_a_big_job_runs():
    """Fair turns: the one-sentence request is not queued behind the job, nor padded with its
    sentences; the job goes on after it."""
    recorder = Recorder(delay=0.05)

    async def scenario():
        batcher = MicroBatcher(recorder, ThreadPoolExecutor(1), max_sentences=4, max_wait_s=0.0)
        batcher.start()
        big = asyncio.ensure_future(batcher.translate([ids(f"big{i:02d}") for i in range(40)], BEAM5))
        await asyncio.sleep(0.08)  # the job's first batches are decoding
        small = await batcher.translate([ids("small")], BEAM5)
        done_when_small_answered = len(recorder.calls)
        assert texts(await big) == [f"BIG{i:02d}" for i in range(40)]
        await batcher.stop()
        return small, done_when_small_answered

    small, calls_before = asyncio.run(scenario())
    assert texts(small) == ["SMALL"]
    assert calls_before <= 4, "the small request waited for most of the job"
    assert ["small"] in [batch for batch, _ in recorder.calls], "it was decoded alone"


def test_a_full_queue_refuses_at_once_and_a_lone_big_job_is_taken():
    recorder = Recorder(delay=0.05)

    async def scenario():
        batcher = MicroBatcher(recorder, ThreadPoolExecutor(1), max_queued=5, max_wait_s=0.0)
        batcher.start()
        big = asyncio.ensure_future(batcher.translate([ids(f"j{i}") for i in range(8)], BEAM5))
        await asyncio.sleep(0)  # queued, not yet handed out
        with pytest.raises(QueueFull) as refused:
            await batcher.translate([ids("x")] * 3, BEAM5)
        assert refused.value.retry_after_s >= 1
        assert len(await big) == 8
        await batcher.stop()

    asyncio.run(scenario())


def test_cancelled_requests_are_not_decoded():
    recorder = Recorder(delay=0.1)

    async def scenario():
        batcher = MicroBatcher(recorder, ThreadPoolExecutor(1), max_sentences=2, max_wait_s=0.0)
        batcher.start()
        first = asyncio.ensure_future(batcher.translate([ids("keep")], BEAM5))
        await asyncio.sleep(0.02)  # decoding
        gone = asyncio.ensure_future(batcher.translate([ids(f"gone{i}") for i in range(6)], BEAM5))
        await asyncio.sleep(0)
        gone.cancel()  # the client left before any of it was handed to a decode
        await first
        await asyncio.sleep(0.2)
        assert batcher.queued == 0
        await batcher.stop()

    asyncio.run(scenario())
    assert all(not s.startswith("gone") for batch, _ in recorder.calls for s in batch)


def test_stopping_fails_the_waiting_requests():
    recorder = Recorder(delay=0.2)

    async def scenario():
        batcher = MicroBatcher(recorder, ThreadPoolExecutor(1), max_sentences=1, max_wait_s=0.0)
        batcher.start()
        waiting = asyncio.ensure_future(batcher.translate([ids("a"), ids("b"), ids("c")], BEAM5))
        await asyncio.sleep(0.05)
        await batcher.stop()
        with pytest.raises(ShuttingDown):
            await waiting

    asyncio.run(scenario())


@pytest.mark.parametrize("wait", [0.0, 0.02])
def test_while_a_batch_decodes_the_next_one_fills(wait):
    recorder = Recorder(delay=0.1)

    async def scenario():
        batcher = MicroBatcher(recorder, ThreadPoolExecutor(1), max_wait_s=wait)
        batcher.start()
        first = asyncio.ensure_future(batcher.translate([ids("first")], BEAM5))
        await asyncio.sleep(0.03)  # the first decode is running
        rest = [batcher.translate([ids(f"r{i}")], BEAM5) for i in range(6)]
        await asyncio.gather(first, *rest)
        await batcher.stop()

    asyncio.run(scenario())
    assert [len(sentences) for sentences, _ in recorder.calls] == [1, 6]


def test_two_slots_decode_two_batches_at_once():
    """With slots=2, a batch that arrives while another decodes starts at once, in the second slot."""
    recorder = Recorder(delay=0.2)
    spans: list[tuple[float, float]] = []

    def timed(batch, search, alignments):
        started = time.monotonic()
        result = recorder(batch, search, alignments)
        spans.append((started, time.monotonic()))
        return result

    async def scenario():
        batcher = MicroBatcher(timed, ThreadPoolExecutor(2), max_wait_s=0.0, slots=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.translate([ids("first")], BEAM5))
        await asyncio.sleep(0.05)  # the first decode is running in slot one
        second = await batcher.translate([ids("second")], BEAM5)
        await first
        await batcher.stop()
        return second

    assert texts(asyncio.run(scenario())) == ["SECOND"]
    (start_a, end_a), (start_b, _) = sorted(spans)
    assert start_b < end_a, "the second batch waited for the first"


def test_waiting_work_is_shared_between_idle_slots():
    """Eight sentences waiting and two idle slots: two batches of four side by side, not one of
    eight beside an idle slot."""
    recorder = Recorder(delay=0.1)

    async def scenario():
        batcher = MicroBatcher(recorder, ThreadPoolExecutor(2), max_wait_s=0.02, slots=2)
        batcher.start()
        await asyncio.sleep(0.01)  # both workers wait for work
        await asyncio.gather(*(batcher.translate([ids(f"s{i}")], BEAM5) for i in range(8)))
        await batcher.stop()

    asyncio.run(scenario())
    assert sorted(len(batch) for batch, _ in recorder.calls) == [4, 4]
