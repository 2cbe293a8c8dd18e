"""The engine choice (`nmt.engines`): speed records in bundle.json, `auto` following them (or the
fallback without one), `nmt bench`, CTranslate2 translators that align on ONNX Runtime and give
our scores, and engines that cannot run a bundle refused in one line. Real engines throughout."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nmt.backends.ctranslate2 import CTranslate2Model
from nmt.backends.onnx import OnnxModel
from nmt.bundle import BUNDLE_FILE, load_bundle
from nmt.engines import (
    FALLBACK_ORDER,
    SPEED_KEY,
    choose,
    device_name,
    open_translator,
    record_speed,
    speed_entry,
)
from nmt.translator import Translator
from tests.conftest import MULTI30K, assert_one_line_error, run_nmt

SENTENCES = ["A man is riding a bike.", "Two dogs play in the snow.", "A woman reads a book in a park."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def transformer(trained_bundles, tmp_path) -> Path:
    """A copy of the tiny Transformer without exports (each test makes what it needs)."""
    return Path(shutil.copytree(trained_bundles["transformer"], tmp_path / "transformer"))


def _record(path: Path, speeds: dict[str, float], threads: int = 1, **changes) -> None:
    bundle = load_bundle(path)
    entry = {**speed_entry(bundle, speeds, "cpu", threads, {"sentences": 3}), **changes}
    record_speed(bundle, entry)


@pytest.mark.parametrize("fastest", ["torch", "onnx", "ctranslate2"])
def test_auto_takes_the_fastest_engine_of_the_record(transformer, fastest):
    speeds = {"torch": 10.0, "onnx": 11.0, "ctranslate2": 12.0, fastest: 20.0}
    _record(transformer, speeds)
    bundle = load_bundle(transformer)  # the version is unchanged: the record is not hashed
    choice = choose(bundle, "cpu", threads=1)
    assert choice.engine == fastest and choice.record is not None
    assert choice.record["sentences_per_s"] == speeds and "fastest" in choice.reason
    translator = Translator.from_bundle(bundle, backend="auto", engine={"threads": 1})
    expected = {"torch": torch.nn.Module, "onnx": OnnxModel, "ctranslate2": CTranslate2Model}[fastest]
    assert isinstance(translator.model, expected)  # the missing export was made for it
    assert all(translator.translate_best(SENTENCES))


@pytest.mark.parametrize(("ctranslate2", "expected"), [(10.4, "onnx"), (10.6, "ctranslate2")])
def test_auto_takes_ctranslate2_only_when_clearly_faster(transformer, ctranslate2, expected):
    """CTranslate2 runs its own search (its translations can differ from the recorded scores'):
    within CT2_MARGIN of the fastest engine running ours, ours serves."""
    _record(transformer, {"torch": 5.0, "onnx": 10.0, "ctranslate2": ctranslate2})
    choice = choose(load_bundle(transformer), "cpu", threads=1)
    assert choice.engine == expected
    assert ("its own search" in choice.reason) == (expected == "onnx")


def test_auto_reads_the_nearest_thread_count_and_skips_other_devices_and_versions(transformer, caplog):
    _record(transformer, {"torch": 30.0, "onnx": 10.0}, threads=1)
    _record(transformer, {"torch": 10.0, "onnx": 30.0}, threads=4)
    bundle = load_bundle(transformer)
    assert [r["threads"] for r in bundle.meta[SPEED_KEY]] == [1, 4]  # one record per device and threads
    assert choose(bundle, "cpu", threads=2).engine == "torch"  # 1 is nearer than 4
    assert choose(bundle, "cpu", threads=3).engine == "onnx"
    _record(transformer, {"torch": 50.0, "onnx": 40.0}, threads=1)  # replaces the first
    assert len(load_bundle(transformer).meta[SPEED_KEY]) == 2

    other = _edited_copy(transformer, "other", device="cpu: some other processor")
    with caplog.at_level(logging.WARNING, logger="nmt.engines"):
        choice = choose(load_bundle(other), "cpu", threads=1)
    assert choice.engine == FALLBACK_ORDER[0] == "onnx" and choice.record is None
    assert "no speed record" in caplog.text and device_name("cpu") in caplog.text
    assert "nmt bench" in caplog.text

    stale = _edited_copy(transformer, "stale", version="0000000000000000")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nmt.engines"):
        assert choose(load_bundle(stale), "cpu", threads=1).engine == "onnx"
    assert "another bundle version" in caplog.text


def _edited_copy(path: Path, name: str, **changes) -> Path:
    """A copy of the bundle whose speed records all have `changes`."""
    copy = Path(shutil.copytree(path, path.parent / name))
    meta = json.loads((copy / BUNDLE_FILE).read_text())
    meta[SPEED_KEY] = [{**record, **changes} for record in meta[SPEED_KEY]]
    (copy / BUNDLE_FILE).write_text(json.dumps(meta))
    return copy


def test_a_recorded_engine_not_installed_here_is_passed_over(transformer, monkeypatch):
    _record(transformer, {"torch": 10.0, "onnx": 11.0, "ctranslate2": 30.0})
    import nmt.engines

    real = nmt.engines.unavailable
    monkeypatch.setattr(
        nmt.engines,
        "unavailable",
        lambda b, e, d="cpu": "ctranslate2 is not installed" if e == "ctranslate2" else real(b, e, d),
    )
    choice = choose(load_bundle(transformer), "cpu", threads=1)
    assert choice.engine == "onnx" and "not available here: ctranslate2" in choice.reason


def test_auto_with_no_engine_for_the_device_names_the_bundle(transformer, monkeypatch):
    import ctranslate2
    import onnxruntime

    from nmt.errors import BundleError

    # a machine without CUDA, also where the tests run on one
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)

    with pytest.raises(BundleError) as error:
        choose(load_bundle(transformer), "cuda")
    message = str(error.value)
    assert "\n" not in message and message.startswith("tiny-transformer")
    assert "no engine can run it on cuda" in message and "torch: no CUDA device" in message


def test_ctranslate2_translator_aligns_on_onnx_runtime(transformer):
    bundle = load_bundle(transformer)
    ct2 = open_translator(bundle, "ctranslate2", threads=1)  # the ct2 and onnx exports made here
    assert isinstance(ct2.model, CTranslate2Model) and ct2.attends and ct2.aligner_engine == "onnx"
    assert (transformer / "onnx" / "export.json").is_file()  # written at once, not on the request
    assert all(isinstance(nbest[0].text, str) for nbest in ct2.translate(SENTENCES))
    assert ct2._aligner is None  # nothing asked for alignments yet: no ONNX Runtime session
    aligned = ct2.translate(SENTENCES, alignments=True)
    assert isinstance(ct2._aligner.model, OnnxModel)
    expected = open_translator(bundle, "onnx", threads=1).translate(SENTENCES, alignments=True)
    for ours, theirs in zip(aligned, expected, strict=True):
        assert ours[0].text == theirs[0].text and ours[0].alignment == theirs[0].alignment
        assert ours[0].attention is not None and torch.equal(
            ours[0].attention.weights, theirs[0].attention.weights
        )


def test_ctranslate2_gives_the_scores_our_search_gives(multi30k, default_exported):
    """Greedy search is the same search in both (batches of one: CTranslate2's length limit is one
    per batch): the same tokens, so the same log-probabilities and, normalised as ours, scores."""
    from nmt.data import read_lines

    bundle = load_bundle(default_exported)
    texts = read_lines(multi30k / "test_2016_flickr.en.gz")[:12]
    greedy = bundle.search.with_overrides(beam_size=1)
    ours = Translator.from_bundle(bundle, batch_size=1).translate(texts, greedy)
    theirs = Translator.from_bundle(bundle, backend="ctranslate2", batch_size=1).translate(texts, greedy)
    for mine, other in zip(ours, theirs, strict=True):
        assert mine[0].text == other[0].text
        assert other[0].log_prob == pytest.approx(mine[0].log_prob, rel=1e-3)
        assert other[0].score == pytest.approx(mine[0].score, rel=1e-3)


def test_bench_records_each_engine_without_changing_the_version(transformer):
    before = load_bundle(transformer).version
    src = str(MULTI30K / "test_2016_flickr.en.gz")
    result = run_nmt(
        "bench", "--model", str(transformer), "--src", src, "--lines", "6", "--rounds", "1",
        "--threads", "1", "--record",
    )  # fmt: skip
    assert "sentences/s" in result.stdout and "recorded in" in result.stdout
    bundle = load_bundle(transformer)  # verified: the version still matches the files
    assert bundle.version == before
    [record] = bundle.meta[SPEED_KEY]
    assert record["device"] == device_name("cpu") and record["threads"] == 1
    assert record["version"] == before and record["sample"]["sentences"] == 6
    assert set(record["sentences_per_s"]) == {"torch", "onnx", "ctranslate2"}
    assert all(v > 0 for v in record["sentences_per_s"].values())
    assert choose(bundle, "cpu", 1).record == record


def test_bench_on_a_multilingual_bundle_needs_the_direction_and_records_it(multilingual_bundle, tmp_path):
    bundle = Path(shutil.copytree(multilingual_bundle, tmp_path / "multi"))
    src = str(MULTI30K / "test_2016_flickr.fr.gz")
    common = (
        "bench",
        "--model",
        str(bundle),
        "--src",
        src,
        "--lines",
        "4",
        "--rounds",
        "1",
        "--engines",
        "torch",
    )
    assert_one_line_error(run_nmt(*common, check=False), "--source/--target", "name the source and target")
    result = run_nmt(*common, "--source", "fr", "--target", "en", "--record")
    assert "recorded in" in result.stdout
    [record] = load_bundle(bundle).meta[SPEED_KEY]
    assert record["sample"]["direction"] == "fr-en" and record["sentences_per_s"]["torch"] > 0


def test_bench_and_translate_refuse_ctranslate2_for_an_lstm_naming_it(trained_bundles, tmp_path):
    lstm = Path(shutil.copytree(trained_bundles["lstm"], tmp_path / "lstm"))
    src = str(MULTI30K / "test_2016_flickr.en.gz")
    result = run_nmt("bench", "--model", str(lstm), "--src", src, "--engines", "ctranslate2", check=False)
    assert_one_line_error(result, "--engines ctranslate2", "tiny-lstm", "Transformers only")
    result = run_nmt("translate", "--model", str(lstm), "--backend", "auto", stdin="A dog runs.\n")
    assert result.stdout.strip()  # no record: the fallback, ONNX Runtime, its export made
    assert (lstm / "onnx" / "export.json").is_file()


_OPEN_AT = """
import logging, sys, time
from nmt.bundle import load_bundle
from nmt.engines import open_translator
logging.basicConfig(level=logging.WARNING, format="%(message)s")
bundle = load_bundle(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # both processes start the export together
print(open_translator(bundle, "onnx", threads=1).translate_best(["A man is riding a bike."])[0])
"""


def test_processes_starting_together_make_a_missing_export_once(transformer):
    """Replicas starting at once on one models folder: one makes the export, the others wait for
    it and load it (without the lock, each made its own and swapped folders under the others)."""
    start = str(time.time() + 6)  # after both have imported torch and loaded the bundle
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AT, str(transformer), start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for _ in range(2)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], results
    outputs = {stdout for stdout, _ in results}
    assert len(outputs) == 1  # the same translation from the same export
    assert sum(stderr.count("exporting it for onnx now") for _, stderr in results) == 1, results
    assert OnnxModel.from_bundle(load_bundle(transformer)).folder.is_dir()
