"""benchmarks/serve_load.py runs end to end on a tiny bundle and prints its verdict (no timing is
asserted: the numbers depend on the machine)."""

from __future__ import annotations

from tests.conftest import run_benchmark


def test_serve_load_runs_and_gives_a_verdict(models_dir, tiny_corpus):
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
        "1",
        "--requests",
        "20",
    )
    rows = [line.split() for line in stdout.splitlines()]
    assert ["4", "miss"] in [row[:2] for row in rows], stdout
