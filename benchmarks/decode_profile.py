"""Where a decoding step's time goes: ONNX Runtime's decoder graph by operator, and PyTorch's
share in the output layer.

For one bundle, on the first N sentences of test_2016_flickr with the bundle's beam at batch 32:
- ONNX Runtime fp32 (an export made into a temporary copy) with ONNX Runtime's own profiler on:
  each operator type's share of the decoder graph's kernel time (the `--operators` largest; an
  If's time includes the nodes of its branch, which count again under their own types), and the
  graph's whole run time against the whole translation (the rest is the search, tokenization and
  Python); with `--shortlist`, this and the next decode with the bundle's vocabulary shortlist;
- ONNX Runtime fp32 again, without the profiler: the CPU time inside ONNX Runtime's runs
  against the rest (the search, the backend's binding, tokenization), per decoder step;
- PyTorch eager with a timer around the output projection (`model.projection`): the seconds it
  takes of the whole translation. Both engines compute that product with the same fp32 GEMM
  efficiency, so it bounds how much faster than PyTorch any fp32 engine can be:
  total / projection.

    .venv/bin/python benchmarks/decode_profile.py --threads 1 --model models/lstm-attention-en-de
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import tempfile
import time
from pathlib import Path

import harness
import torch

import nmt.backends.onnx as onnx_backend
from nmt.bundle import load_bundle
from nmt.data import read_lines
from nmt.export.onnx import export_onnx
from nmt.search import BeamBatch
from nmt.translator import Translator


def _profiled_options(prefix: Path):
    """`session_options` with ONNX Runtime's profiler writing under `prefix`."""
    plain = onnx_backend.session_options

    def options(*args, **kwargs):
        result = plain(*args, **kwargs)
        result.enable_profiling = True
        result.profile_file_prefix = str(prefix)
        return result

    return options


def profile_onnx(
    bundle_path: Path, texts: list[str], tmp: Path, shortlist: bool = False, operators: int = 10
) -> None:
    bundle = load_bundle(
        shutil.copytree(bundle_path, tmp / "bundle", ignore=shutil.ignore_patterns("onnx", "ct2"))
    )
    export_onnx(bundle)
    plain = onnx_backend.session_options
    onnx_backend.session_options = _profiled_options(tmp / "profile")
    try:
        translator = Translator.from_bundle(bundle, "cpu", "onnx", batch_size=32, shortlist=shortlist)
    finally:
        onnx_backend.session_options = plain
    start = time.perf_counter()
    translator.translate_best(texts)
    total = time.perf_counter() - start
    events = json.loads(Path(translator.model.decoder.end_profiling()).read_text())
    kernels: collections.Counter[str] = collections.Counter()
    run = 0.0
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            kernels[event["args"]["op_name"]] += event["dur"]
        elif event.get("name") == "model_run":
            run += event["dur"]
    kernel_total = sum(kernels.values())
    print(
        f"ONNX Runtime fp32: {total:.2f} s in all; decoder graph runs {run / 1e6:.2f} s "
        f"({100 * run / 1e6 / total:.0f}%), of which kernels {kernel_total / 1e6:.2f} s"
    )
    rows = [
        [op, f"{us / 1e6:.3f}", f"{100 * us / kernel_total:.1f}%"]
        for op, us in kernels.most_common(operators)
    ]
    harness.print_table(["operator", "seconds", "share of kernels"], rows)


def profile_search(bundle_path: Path, texts: list[str], tmp: Path, shortlist: bool = False) -> None:
    """Where ONNX Runtime fp32's whole translation goes, without the profiler: CPU time inside
    the sessions' runs (decoder steps, encoder, memory gathers) against everything else (the
    search's bookkeeping, the backend's binding, tokenization), per decoder step."""
    bundle = load_bundle(
        shutil.copytree(bundle_path, tmp / "search", ignore=shutil.ignore_patterns("onnx", "ct2"))
    )
    export_onnx(bundle)
    translator = Translator.from_bundle(bundle, "cpu", "onnx", batch_size=32, shortlist=shortlist)
    model = translator.model
    inside, runs = [0.0], collections.Counter()
    plain_run = model._run

    def timed(session, inputs, outputs):
        start = time.thread_time()
        try:
            return plain_run(session, inputs, outputs)
        finally:
            inside[0] += time.thread_time() - start
            runs["decoder" if session is model.decoder else "encoder or gather"] += 1

    model._run = timed
    translator.translate_best(texts[:8])
    inside[0], runs = 0.0, collections.Counter()
    start = time.thread_time()
    translator.translate_best(texts)
    total = time.thread_time() - start
    outside = total - inside[0]
    print(
        f"\nONNX Runtime fp32, CPU time: {total:.2f} s in all, {inside[0]:.2f} s in ONNX Runtime's runs "
        f"({runs['decoder']} decoder steps, {runs['encoder or gather']} encoder and memory-gather runs), "
        f"{outside:.2f} s ({100 * outside / total:.0f}%) outside them: search, binding, tokenization; "
        f"{1000 * outside / max(runs['decoder'], 1):.2f} ms per decoder step"
    )
    _count_rows(translator, texts)


def _count_rows(translator: Translator, texts: list[str]) -> None:
    """The rows the decoder computed over `texts` (the bundle's beam, batch 32), and the finished
    hypotheses the beams of sentences still searched held (decoded for nothing unless the model
    leaves them out, `skips_finished`)."""
    beam = translator.search.beam_size
    model, rows, finished = translator.model, [0], [0]
    plain_run, plain_advance = model._run, BeamBatch.advance_top_k

    def counting_run(session, inputs, outputs):
        if session is model.decoder:
            rows[0] += inputs[onnx_backend.PREV_TOKENS].shape()[0]
        return plain_run(session, inputs, outputs)

    def counting_advance(beams: BeamBatch, *args, **kwargs):
        finished[0] += int(beams.finished.sum())
        return plain_advance(beams, *args, **kwargs)

    model._run, BeamBatch.advance_top_k = counting_run, counting_advance  # type: ignore[method-assign]
    try:
        outputs = translator.translate_best(texts)
    finally:
        model._run, BeamBatch.advance_top_k = plain_run, plain_advance  # type: ignore[method-assign]
    tokens = sum(len(ids) + 1 for ids in translator.tgt_tokenizer.encode(outputs))  # + EOS
    kept = "left out of the steps (skips_finished)" if model.skips_finished else "decoded along"
    print(
        f"rows decoded: {rows[0]}; finished hypotheses kept in the beams of sentences still searched: "
        f"{finished[0]}, {kept}; the best translations have {tokens} tokens with EOS ({beam * tokens} "
        f"rows for {beam} beams that stop with each sentence's best)"
    )


def profile_torch(bundle_path: Path, texts: list[str]) -> None:
    translator = Translator.from_bundle(load_bundle(bundle_path), "cpu", batch_size=32)
    projection = translator.model.projection
    spent, started = [0.0], [0.0]
    projection.register_forward_pre_hook(lambda *_: started.__setitem__(0, time.perf_counter()))
    projection.register_forward_hook(
        lambda *_: spent.__setitem__(0, spent[0] + time.perf_counter() - started[0])
    )
    translator.translate_best(texts[:8])
    spent[0] = 0.0
    start = time.perf_counter()
    translator.translate_best(texts)
    total = time.perf_counter() - start
    print(
        f"\nPyTorch eager: {total:.2f} s in all, output projection {spent[0]:.2f} s "
        f"({100 * spent[0] / total:.0f}%): an fp32 engine with the same GEMM is at most "
        f"{total / spent[0]:.2f}x PyTorch"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument(
        "--model", default="models/transformer-en-de", help="bundle folder (default: %(default)s)"
    )
    parser.add_argument(
        "--sentences", type=int, default=1000, help="first N test sentences (default: all 1000)"
    )
    parser.add_argument(
        "--shortlist", action="store_true", help="the ONNX Runtime profile with the bundle's shortlist"
    )
    parser.add_argument(
        "--operators", type=int, default=10, help="operator types in the table (default: %(default)s)"
    )
    args = parser.parse_args()
    harness.set_threads(args.threads)
    bundle = load_bundle(args.model)
    texts = read_lines(harness.corpus_file(args.data, harness.TEST_SPLIT, bundle.src_lang))[: args.sentences]
    print(
        f"bundle {args.model}; {len(texts)} sentences; beam {bundle.search.beam_size}, batch 32; "
        f"{torch.get_num_threads()} thread(s)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        profile_onnx(Path(args.model), texts, Path(tmp), args.shortlist, args.operators)
        profile_search(Path(args.model), texts, Path(tmp), args.shortlist)
    profile_torch(Path(args.model), texts)


if __name__ == "__main__":
    main()
