"""benchmarks/serve_load.py runs every phase end to end on a tiny bundle, a few seconds each, and
prints each phase's verdict lines (no timing is asserted: the numbers depend on the machine, and
a tiny model says nothing about the targets). It needs wrk and redis-server, as the script does."""

from __future__ import annotations

import re

from tests.conftest import run_benchmark

VERDICTS = [
    "target: levels: miss",
    "target: hits: Redis hits >= 0.5x hello-world req/s",
    "target: hits: Redis-hit p99 <= 5x p50",
    "target: hits: no non-2xx answers or socket errors",
    "target: redis-outage: 0 failed requests",
    "target: redis-outage: cache used again <= 5 s after the restart",
    "target: fairness: one-sentence p95 <= 2 s",
    "target: all targets above (",
]


def test_serve_load_runs_every_phase_and_gives_its_verdicts(models_dir, tiny_corpus):
    stdout = run_benchmark(
        "serve_load.py",
        "--model",
        str(models_dir / "tiny-transformer"),
        "--src",
        str(tiny_corpus / "test_2016_flickr.en"),
        "--levels",
        "1",
        "4",
        "--seconds",
        "2",
        "--requests",
        "20",
        "--outage-seconds",
        "6",
        "--fairness-seconds",
        "2",
        "--big-job-wait",
        "10",
        timeout=300,
    )
    rows = [line.split() for line in stdout.splitlines()]
    assert ["4", "miss"] in [row[:2] for row in rows], stdout
    for contender in ("hello", "redis hit", "memory hit"):  # wrk's runs, second round
        assert re.search(rf"^ *{contender} +2 ", stdout, re.MULTILINE), stdout
    verdicts = [line for line in stdout.splitlines() if line.startswith("target: ")]
    for start in VERDICTS:
        assert any(line.startswith(start) for line in verdicts), f"no {start!r} line in:\n{stdout}"
    assert "big job: " in stdout and "first hit at" in stdout, stdout
