"""The micro-batcher on a plain function standing in for the model: who gets batched with whom."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nmt.config import SearchConfig
from nmt.translator import Translation
from serving.batcher import MicroBatcher


class Recorder:
    """Translates by upper-casing; records each call's sentences and options."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[list[str], int]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, sentences: list[str], search: SearchConfig) -> list[list[Translation]]:
        time.sleep(self.delay)
        with self.lock:
            self.calls.append((list(sentences), search.beam_size))
        if "boom" in sentences:
            raise RuntimeError("decoder failed")
        return [[Translation(s.upper(), -1.0, -1.0)] for s in sentences]


def batched(recorder: Recorder, jobs, **limits):
    async def scenario():
        batcher = MicroBatcher(
            recorder, ThreadPoolExecutor(1), count_tokens=lambda s: len(s.split()), **limits
        )
        batcher.start()
        results = await asyncio.gather(*(batcher.translate(s, o) for s, o in jobs), return_exceptions=True)
        await batcher.stop()
        return results

    return asyncio.run(scenario())


BEAM5, BEAM2 = SearchConfig(beam_size=5), SearchConfig(beam_size=2)


def test_concurrent_requests_share_one_decode_and_get_their_own_results():
    recorder = Recorder()
    jobs = [([f"s{i}a", f"s{i}b"], BEAM5) for i in range(5)]
    results = batched(recorder, jobs, max_wait_s=0.05)
    assert [[nbest[0].text for nbest in r] for r in results] == [[f"S{i}A", f"S{i}B"] for i in range(5)]
    assert len(recorder.calls) == 1 and len(recorder.calls[0][0]) == 10


def test_limits_close_a_batch():
    recorder = Recorder()
    results = batched(recorder, [([f"s{i}"], BEAM5) for i in range(7)], max_sentences=3, max_wait_s=0.05)
    assert len(results) == 7
    assert [len(sentences) for sentences, _ in recorder.calls] == [3, 3, 1]
    recorder = Recorder()
    batched(recorder, [(["one two three"], BEAM5) for _ in range(4)], max_tokens=8, max_wait_s=0.05)
    assert [len(sentences) for sentences, _ in recorder.calls] == [2, 2]  # 4 tokens each with EOS


def test_different_search_options_are_decoded_apart():
    recorder = Recorder()
    batched(recorder, [(["a"], BEAM5), (["b"], BEAM2), (["c"], BEAM5)], max_wait_s=0.05)
    assert sorted(recorder.calls) == [(["a", "c"], 5), (["b"], 2)]


def test_a_failed_decode_fails_its_batch_only():
    recorder = Recorder()
    results = batched(recorder, [(["boom"], BEAM5), (["fine"], BEAM2)], max_wait_s=0.05)
    assert isinstance(results[0], RuntimeError)
    assert results[1][0][0].text == "FINE"


@pytest.mark.parametrize("wait", [0.0, 0.02])
def test_while_a_batch_decodes_the_next_one_fills(wait):
    recorder = Recorder(delay=0.1)

    async def scenario():
        batcher = MicroBatcher(recorder, ThreadPoolExecutor(1), count_tokens=len, max_wait_s=wait)
        batcher.start()
        first = asyncio.ensure_future(batcher.translate(["first"], BEAM5))
        await asyncio.sleep(0.03)  # the first decode is running
        rest = [batcher.translate([f"r{i}"], BEAM5) for i in range(6)]
        await asyncio.gather(first, *rest)
        await batcher.stop()

    asyncio.run(scenario())
    assert [len(sentences) for sentences, _ in recorder.calls] == [1, 6]


def test_two_slots_decode_two_batches_at_once():
    """With slots=2, a batch that arrives while another decodes starts at once, in the second slot."""
    recorder = Recorder(delay=0.2)
    spans: list[tuple[float, float]] = []

    def timed(sentences, search):
        started = time.monotonic()
        result = recorder(sentences, search)
        spans.append((started, time.monotonic()))
        return result

    async def scenario():
        batcher = MicroBatcher(timed, ThreadPoolExecutor(2), count_tokens=len, max_wait_s=0.0, slots=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.translate(["first"], BEAM5))
        await asyncio.sleep(0.05)  # the first decode is running in slot one
        second = await batcher.translate(["second"], BEAM5)
        await first
        await batcher.stop()
        return second

    assert asyncio.run(scenario())[0][0].text == "SECOND"
    (start_a, end_a), (start_b, _) = sorted(spans)
    assert start_b < end_a, "the second batch waited for the first"
