"""The benchmark scripts run end to end on a tiny corpus and model and print a verdict.

Only that they run is checked: their numbers depend on the machine, so no timing is asserted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_benchmark

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
    run_benchmark(script, "--quick", "--data", str(tiny_corpus), *overrides, *SCRIPTS[script], timeout=120)


def test_data_scale_benchmark_runs_and_gives_a_verdict(tiny_corpus: Path):
    overrides = [arg for setting in TINY for arg in ("--set", setting)]
    stdout = run_benchmark(
        "data_scale.py", "--quick", "--data", str(tiny_corpus), *overrides, "--threads", "1", timeout=600
    )
    assert "DDP x3, 2 processes" in stdout
    assert stdout.count("target: ") == 7


def _on_a_tiny_bundle(bundle: Path, tiny_corpus: Path) -> list[str]:
    """Arguments running a decoding benchmark on 8 sentences of `bundle`, one thread."""
    return ["--model", str(bundle), "--data", str(tiny_corpus), "--sentences", "8", "--threads", "1"]


@pytest.mark.parametrize("arch", ["transformer", "lstm_attention"])
def test_decode_benchmark_runs_on_a_tiny_bundle(arch: str, trained_bundles, tiny_corpus: Path):
    """Every engine the architecture has (CTranslate2 for the Transformer only) on 8 sentences;
    for the Transformer with --fp16 (on with --device cuda): PyTorch and ONNX Runtime in float16
    at beam 5, batch 64, judged against their float32 (CTranslate2 computes no float16 on a CPU,
    which it says)."""
    fp16 = ["--fp16"] if arch == "transformer" else []
    stdout = run_benchmark(
        "decode.py", "--quick", *fp16, *_on_a_tiny_bundle(trained_bundles[arch], tiny_corpus)
    )
    assert ("CTranslate2 int8" in stdout) == (arch == "transformer")
    if arch == "transformer":  # beside the medians' ratio, each round's (one round here)
        assert re.search(r">= 1\.0x CTranslate2 fp32 \(\d+\.\d\dx; rounds \d+\.\d\dx\)", stdout), stdout
    assert "ONNX Runtime int8" in stdout and "greedy, batch 32:" in stdout
    assert ("beam 5, batch 64:" in stdout) == bool(fp16)
    if fp16:
        assert "CTranslate2 computes no float16 on cpu: no CTranslate2 fp16 contender" in stdout
        table = stdout[stdout.index("beam 5, batch 64:") :]
        assert "PyTorch fp16" in table and "ONNX Runtime fp16" in table
        for engine in ("PyTorch", "ONNX Runtime"):
            assert f"beam 5, batch 64: {engine} fp16 within 0.5 BLEU of fp32" in stdout
    assert not any(Path(trained_bundles[arch]).glob("onnx*")), "the benchmark must not touch the bundle"


def test_decode_profile_splits_the_time_by_operator_and_bounds_fp32(trained_bundles, tiny_corpus: Path):
    bundle = trained_bundles["lstm_attention"]
    stdout = run_benchmark("decode_profile.py", *_on_a_tiny_bundle(bundle, tiny_corpus), verdict=False)
    assert "share of kernels" in stdout
    # the table's rows are operators; which ten take the most time varies run to run on a tiny model
    assert re.search(r"^\s*(Gemm|MatMul|LSTM|TopK)\s+\d+\.\d{3}\s+\d+\.\d%$", stdout, re.MULTILINE), stdout
    assert "output projection" in stdout and "at most" in stdout
    assert re.search(r"outside them: search, binding, tokenization; \d+\.\d\d ms per decoder step", stdout), (
        stdout
    )
    assert not any(Path(bundle).glob("onnx*")), "it must not touch the bundle"


def test_fixed_steps_times_both_engines_on_identical_steps(trained_bundles, tiny_corpus: Path):
    bundle = trained_bundles["transformer"]
    args = ["--model", str(bundle), "--data", str(tiny_corpus), "--batches", "1", "--rounds", "1"]
    stdout = run_benchmark("fixed_steps.py", *args)
    assert "ONNX Runtime fp32" in stdout and "CTranslate2 fp32" in stdout
    assert not any(Path(bundle).glob("onnx*")) and not any(Path(bundle).glob("ct2*")), (
        "it must not touch the bundle"
    )


def test_ab_trees_runs_each_checkout_in_its_own_process(trained_bundles, tiny_corpus: Path, tmp_path: Path):
    """This checkout and a copy of its package: each round runs each tree's own nmt (a child that
    imported another tree's stops the run), the same translations, a CPU time for each round; a
    tree without nmt is refused in one line rather than measured on this checkout's code."""
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "nmt", copy / "nmt", ignore=shutil.ignore_patterns("__pycache__"))
    bundle = trained_bundles["transformer"]
    args = ["--model", str(bundle), "--data", str(tiny_corpus), "--sentences", "8", "--rounds", "2"]
    stdout = run_benchmark("ab_trees.py", "--tree", ".", "--tree", str(copy), *args, verdict=False)
    assert stdout.count("round ") == 4 and "median outside ORT" in stdout
    assert re.search(r"^\s*\.\s+\d+\.\d{3}\s.*\s8/8$", stdout, re.MULTILINE), stdout
    assert re.search(rf"^\s*{re.escape(str(copy))}\s+\d+\.\d{{3}}\s.*\s8/8$", stdout, re.MULTILINE), stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = subprocess.run(
        [sys.executable, "benchmarks/ab_trees.py", "--tree", ".", "--tree", str(empty), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert f"{empty}: the child imported nmt from" in refused.stderr.strip().splitlines()[-1]


def test_graph_search_gives_our_search_translations(trained_bundles, tiny_corpus: Path):
    """The beam step appended to a Transformer's decoder graph (an experiment, dropped) returns
    the Python search's translations; a plain LSTM bundle (its decoder computes every row) is
    refused in one line."""
    args = ["--data", str(tiny_corpus), "--sentences", "8", "--rounds", "1"]
    stdout = run_benchmark("graph_search.py", "--model", str(trained_bundles["transformer"]), *args)
    assert "the same translations: 8 of 8" in stdout
    refused = subprocess.run(
        [
            sys.executable,
            "benchmarks/graph_search.py",
            "--model",
            str(trained_bundles["lstm"]),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 1
    assert "computes any rows of its grid only" in refused.stderr.strip().splitlines()[-1]


def test_onnx_ops_compares_forms_that_compute_the_same():
    stdout = run_benchmark("onnx_ops.py", "--rows", "16", "--runs", "5")
    rows = re.findall(r"^\s*(.+?)\s+\d+\s+(\d\.\de[+-]\d\d)$", stdout, re.MULTILINE)
    assert len(rows) == 10, stdout
    assert all(float(difference) < 1e-5 for _, difference in rows), stdout
