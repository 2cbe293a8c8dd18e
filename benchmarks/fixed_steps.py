"""ONNX Runtime and CTranslate2 on identical work: the cost of one decoding step of the same rows.

The two engines' searches differ (CTranslate2 stops a sentence once its best hypothesis has
finished; ours returns PyTorch's n best exactly), so whole translations compare more than the
engines. Here each decodes batches of 32 test sentences x 5 beams for exactly N steps: CTranslate2
with `min_decoding_length = max_decoding_length = N` (its own search, no sentence ends early),
ONNX Runtime as our backend's decoder steps on 160 rows with their binding (beams reordered at
every step, no search). Printed: CPU milliseconds per step, from the difference between N = 25 and
N = 5 (the encoder and the first steps cancel out), and the ratio, judged against 1.0x (issue 15:
ONNX Runtime at CTranslate2's speed on identical weights and identical work).

    .venv/bin/python benchmarks/fixed_steps.py --model models/transformer-en-de --rounds 3
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import harness
import torch

from nmt.bundle import load_bundle
from nmt.data import collate_source, read_lines
from nmt.export.ctranslate2 import export_ctranslate2
from nmt.export.onnx import export_onnx
from nmt.onnx_format import TOP_K_OUTPUTS
from nmt.specials import BOS_ID
from nmt.translator import Translator

BATCH, BEAM, SHORT, LONG = 32, 5, 5, 25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/transformer-en-de", help="bundle (default: %(default)s)")
    parser.add_argument("--data", default="data/multi30k", help="folder with test_2016_flickr.<src>.gz")
    parser.add_argument("--batches", type=int, default=10, help="batches of 32 sentences (default 10)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fixed-steps-") as tmp:
        bundle = load_bundle(
            shutil.copytree(args.model, Path(tmp) / "b", ignore=shutil.ignore_patterns("onnx", "ct2"))
        )
        export_onnx(bundle)
        export_ctranslate2(bundle)
        texts = read_lines(harness.corpus_file(Path(args.data), "test_2016_flickr", bundle.src_lang))
        onnx = Translator.from_bundle(bundle, "cpu", "onnx")
        ct2 = Translator.from_bundle(bundle, "cpu", "ctranslate2", {"compute_type": "float32", "threads": 1})
        batches = [
            collate_source(onnx.encode(texts[i : i + BATCH])) for i in range(0, BATCH * args.batches, BATCH)
        ]
        pieces = [
            [
                [ct2.model.pieces[i] for i in row[:length]]
                for row, length in zip(src.tolist(), lengths.tolist(), strict=True)
            ]  # type: ignore[union-attr]
            for src, lengths in batches
        ]

        def onnx_seconds(steps: int) -> float:
            model, fetch = onnx.model, dict.fromkeys(TOP_K_OUTPUTS, "host")
            start = time.process_time()
            for src, lengths in batches:
                memory, state = model.encode(src, lengths)
                rows = torch.arange(src.size(0) * BEAM)
                state = model.select_state(state, rows // BEAM)  # each sentence's state to its beams
                tokens = torch.full((rows.numel(),), BOS_ID)
                for _ in range(steps):
                    _, state = model._decode(tokens, memory, state, BEAM, fetch)  # type: ignore[union-attr]
                    state = model.select_state(state, rows.flip(0))  # a reordering, as a search makes
            return time.process_time() - start

        def ct2_seconds(steps: int) -> float:
            start = time.process_time()
            for batch in pieces:
                ct2.model.translator.translate_batch(  # type: ignore[union-attr]
                    batch,
                    beam_size=BEAM,
                    min_decoding_length=steps,
                    max_decoding_length=steps,
                    max_batch_size=BATCH,
                )
            return time.process_time() - start

        onnx_seconds(SHORT), ct2_seconds(SHORT)  # warm-up
        per_step: dict[str, list[float]] = {"ONNX Runtime fp32": [], "CTranslate2 fp32": []}
        for _ in range(args.rounds):
            for name, run in (("ONNX Runtime fp32", onnx_seconds), ("CTranslate2 fp32", ct2_seconds)):
                short, long = run(SHORT), run(LONG)
                per_step[name].append((long - short) / (LONG - SHORT) / len(batches) * 1000)
    print(
        f"{bundle.name}: {len(batches)} batches of {BATCH} sentences x {BEAM} beams, steps {SHORT + 1}..{LONG}, "
        f"1 thread, {args.rounds} rounds: CPU ms per step of {BATCH * BEAM} rows"
    )
    rows = [
        [name, f"{harness.median(v):.2f}", " ".join(f"{x:.2f}" for x in v)] for name, v in per_step.items()
    ]
    harness.print_table(["engine", "median", "rounds"], rows)
    onnx_ms, ct2_ms = (harness.median(v) for v in per_step.values())
    harness.verdict(
        f"ONNX Runtime fp32 >= 1.0x CTranslate2 fp32 on identical steps ({ct2_ms / onnx_ms:.2f}x)",
        onnx_ms <= ct2_ms,
    )


if __name__ == "__main__":
    main()
