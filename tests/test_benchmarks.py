"""The benchmark scripts run end to end on a tiny corpus and model and print a verdict.

Only that they run is checked: their numbers depend on the machine, so no timing is asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TINY = [
    "model.d_model=32",
    "model.heads=2",
    "model.ff_dim=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "tokenizer.vocab_size=400",
    "train.batch_tokens=600",
    "train.device=cpu",
]

SCRIPTS = {
    "train_speed.py": ["--rounds", "2", "--steps", "2", "--warmup", "1"],
    "padding.py": [],
    "beam_batch.py": ["--model", "random", "--sentences", "8", "--rounds", "2"],
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_and_gives_a_verdict(script: str, tiny_corpus: Path):
    overrides = [arg for setting in TINY for arg in ("--set", setting)]
    result = subprocess.run(
        [
            sys.executable,
            f"benchmarks/{script}",
            "--quick",
            "--data",
            str(tiny_corpus),
            *overrides,
            *SCRIPTS[script],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("target: ") and last.endswith(("-> PASS", "-> FAIL")), result.stdout


@pytest.mark.parametrize("arch", ["transformer", "lstm_attention"])
def test_decode_benchmark_runs_on_a_tiny_bundle(arch: str, trained_bundles, tiny_corpus: Path):
    """Every engine the architecture has (CTranslate2 for the Transformer only) on 8 sentences."""
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/decode.py",
            "--quick",
            "--model",
            str(trained_bundles[arch]),
            "--data",
            str(tiny_corpus),
            "--sentences",
            "8",
            "--threads",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("CTranslate2 int8" in result.stdout) == (arch == "transformer")
    assert "ONNX Runtime int8" in result.stdout and "greedy, batch 32:" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("target: ") and last.endswith(("-> PASS", "-> FAIL")), result.stdout
    assert not any(Path(trained_bundles[arch]).glob("onnx*")), "the benchmark must not touch the bundle"
