"""benchmarks/serve_load.py runs end to end on a tiny bundle and prints its verdict (no timing is
asserted: the numbers depend on the machine)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_serve_load_runs_and_gives_a_verdict(models_dir, tiny_corpus):
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/serve_load.py",
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
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert any(line.split()[:2] == ["4", "miss"] for line in lines if line.strip()), result.stdout
    assert lines[-1].startswith("target: ") and lines[-1].endswith(("-> PASS", "-> FAIL"))
