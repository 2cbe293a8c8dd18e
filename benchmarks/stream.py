"""Streaming: how soon the first sentence of a long text arrives over POST /v1/translate/stream.

Target: for a 20-sentence text the first `sentence` event arrives within 30% of the time the whole
text takes. Both readings of "the whole text" are measured and judged: the stream's own `done`
event, and one POST /v1/translate of a text of 20 other sentences (no streaming, one request).
Every text is new (distinct test_2016_flickr sentences, so nothing comes from the cache); stream
and plain requests alternate, over real HTTP against `nmt serve` started here (one decode slot
per core, as the service defaults). Medians over the rounds.

    .venv/bin/python benchmarks/stream.py                     # the default bundle, ~1 min
    .venv/bin/python benchmarks/stream.py --model BUNDLE --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import harness
import httpx

from nmt.data import read_lines

TARGET = 0.30
SENTENCES = 20


def timed_stream(client: httpx.Client, payload: dict) -> tuple[float, float, int]:
    """(seconds to the first sentence event, seconds to done, sentence events)."""
    started = time.perf_counter()
    first, count = None, 0
    with client.stream("POST", "/v1/translate/stream", json=payload) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line == "event: sentence":
                count += 1
                first = first or time.perf_counter() - started
            elif line == "event: error":
                raise SystemExit("the stream answered an error event")
    total = time.perf_counter() - started
    return first or total, total, count


def timed_whole(client: httpx.Client, payload: dict) -> float:
    started = time.perf_counter()
    client.post("/v1/translate", json=payload).raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("models/transformer-en-de"), help="bundle folder")
    parser.add_argument("--data", type=Path, default=harness.DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    # one sentence each (one full stop, at the end), so a text of 20 splits into 20
    lines = [
        line
        for line in read_lines(harness.corpus_file(args.data, "test_2016_flickr", "en"))
        if line.endswith(".") and line.count(".") == 1 and line[:1].isupper()
    ]
    if len(lines) < (2 * args.rounds + 1) * SENTENCES:
        raise SystemExit(f"--rounds {args.rounds} needs more sentences than the test set has")
    texts = [" ".join(lines[i * SENTENCES : (i + 1) * SENTENCES]) for i in range(2 * args.rounds + 1)]
    src, tgt = "en", "de"
    with tempfile.TemporaryDirectory() as folder:
        process, url = harness.start_service(
            args.model, Path(folder) / "serve.log", {"NMT_MAX_CHARS": "20000"}
        )
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                timed_whole(client, {"source": src, "target": tgt, "text": texts[-1]})  # warm up
                firsts, stream_totals, wholes = [], [], []
                for round in range(args.rounds):
                    first, total, count = timed_stream(
                        client, {"source": src, "target": tgt, "text": texts[2 * round]}
                    )
                    if count != SENTENCES:
                        raise SystemExit(f"the stream gave {count} sentence events, not {SENTENCES}")
                    whole = timed_whole(client, {"source": src, "target": tgt, "text": texts[2 * round + 1]})
                    firsts.append(first)
                    stream_totals.append(total)
                    wholes.append(whole)
        finally:
            process.terminate()
            process.wait(timeout=30)
    first, total, whole = (harness.median(v) for v in (firsts, stream_totals, wholes))
    harness.print_table(
        ["measure (median)", "seconds"],
        [
            ["first sentence event", f"{first:.3f}"],
            ["stream, done event", f"{total:.3f}"],
            ["POST /v1/translate, whole text", f"{whole:.3f}"],
        ],
    )
    print(
        f"first event / whole stream: {first / total:.1%}; first event / POST /v1/translate: {first / whole:.1%}"
    )
    harness.verdict(
        f"first event of a {SENTENCES}-sentence text within {TARGET:.0%} of the whole text's time (both)",
        first / total <= TARGET and first / whole <= TARGET,
    )


if __name__ == "__main__":
    main()
