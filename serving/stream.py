"""A long text translated sentence by sentence, each handed out as soon as it is done, in order.

The sentences go to the model's micro-batcher in groups (`groups`): the first sentence alone, and
only once it is back, the rest in even groups of at most `MOST`, `IN_FLIGHT` groups submitted at
once (one per decode slot). The first sentence is thus back after one sentence's decode, not after
a batch's (submitted together with the next group, the batcher would decode them in one batch),
and the bigger groups after it keep the throughput near one request's. Each group goes through the translation
path of /v1/translate (memory, cache, model, repair, confidence), its sentences as texts.

Stopping: when the consumer stops (the client went away and Starlette cancelled the stream),
the groups in flight are cancelled (their sentences not yet decoding are withdrawn from the
batcher) and the groups not yet submitted never are.

Server-sent events (`sse_event`): `sentence` {index, ...} per sentence, `done` with the joined
text, `error` {"error": {...}} if something fails once the stream has begun (then it ends).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import orjson

from serving.translation import TextResult

FIRST, MOST = 1, 10  # sentences in the first group, and in the biggest
IN_FLIGHT = 2  # groups submitted to the batcher at once


def groups(count: int, first: int = FIRST, most: int = MOST) -> Iterator[tuple[int, int]]:
    """[start, end) of each group of `count` sentences: `first`, then the rest in groups of at
    most `most`, of even sizes, as many as a multiple of `IN_FLIGHT` (so the slots finish
    together: 19 after the first go as 10 + 9, not 8 + 8 + 3 with a slot idle for the 3)."""
    head = min(count, first)
    if head:
        yield 0, head
    rest = count - head
    if rest <= 0:
        return
    parts = -(-rest // most)
    parts = -(-parts // IN_FLIGHT) * IN_FLIGHT
    parts = min(parts, rest)
    size, extra = divmod(rest, parts)
    start = head
    for part in range(parts):
        end = start + size + (part < extra)
        yield start, end
        start = end


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event (data is JSON on one line, which orjson guarantees)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


Translate = Callable[[list[str]], Awaitable[list[TextResult]]]


async def in_order(sentences: list[str], translate: Translate) -> AsyncIterator[tuple[int, TextResult]]:
    """(index, result) of every sentence, in order, translating `IN_FLIGHT` groups at a time;
    stopping early (or being cancelled) cancels the groups in flight and submits no more."""
    waiting = deque(groups(len(sentences)))
    running: deque[tuple[int, asyncio.Task[list[TextResult]]]] = deque()
    limit = 1  # the first group alone: submitted with the next, the batcher would decode them together
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                start, end = waiting.popleft()
                running.append((start, asyncio.ensure_future(translate(sentences[start:end]))))
            start, task = running[0]
            results = await task
            running.popleft()
            limit = IN_FLIGHT
            for offset, result in enumerate(results):
                yield start + offset, result
    finally:
        for _, task in running:
            task.cancel()
