"""Tune a shortlist's k (candidates per source token) and N (frequent target tokens) on Multi30k val.

For each (k, N) of the grid, builds the shortlist from the training corpus and translates the
validation set (never the test set) with and without it, on one engine, beam 5, batch 32: BLEU
against the full vocabulary, the mean vocabulary size per batch, and the decoding time ratio.

    .venv/bin/python benchmarks/shortlist_tune.py --model models/lstm-en-de --k 10,20,40 --frequent 100,300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import harness
import numpy as np

from nmt.bundle import load_bundle
from nmt.data import collate_source, read_lines
from nmt.metrics import bleu_only
from nmt.shortlist import shortlist_for_bundle
from nmt.translator import Translator, length_sorted_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument("--model", default="models/lstm-en-de")
    parser.add_argument("--backend", default="onnx", choices=["torch", "onnx"])
    parser.add_argument("--k", default="10,20,40", help="comma-separated k values")
    parser.add_argument("--frequent", default="100,300", help="comma-separated N values")
    parser.add_argument("--sentences", type=int, default=1014, help="first N val sentences (default all)")
    args = parser.parse_args()
    harness.set_threads(args.threads)
    bundle = load_bundle(args.model)
    src = read_lines(harness.corpus_file(args.data, "val", bundle.src_lang))[: args.sentences]
    ref = read_lines(harness.corpus_file(args.data, "val", bundle.tgt_lang))[: args.sentences]
    train = [harness.corpus_file(args.data, "train", lang) for lang in (bundle.src_lang, bundle.tgt_lang)]
    translator = Translator.from_bundle(bundle, "cpu", args.backend)
    search = bundle.search.model_copy(update={"beam_size": 5, "n_best": 1})
    start = time.perf_counter()
    full = translator.translate_best(src, search)
    full_seconds = time.perf_counter() - start
    full_bleu = bleu_only(full, ref)[0]
    print(f"{args.model} on val ({len(src)} sentences), {args.backend}: full vocabulary BLEU {full_bleu:.2f}")
    ids = translator.encode(src)
    rows = []
    for k in (int(v) for v in args.k.split(",")):
        for n in (int(v) for v in args.frequent.split(",")):
            shortlist = shortlist_for_bundle(bundle, Path(train[0]), Path(train[1]), k, n)
            sizes = []
            for batch in length_sorted_batches([len(s) + 1 for s in ids], 32, 1 << 30):
                vocabulary = shortlist.vocabulary(collate_source([ids[i] for i in batch])[0])
                sizes.append(bundle.tgt_tokenizer.vocab_size if vocabulary is None else vocabulary.numel())
            translator.shortlist = shortlist
            start = time.perf_counter()
            out = translator.translate_best(src, search)
            seconds = time.perf_counter() - start
            translator.shortlist = None
            bleu = bleu_only(out, ref)[0]
            same = sum(a == b for a, b in zip(out, full, strict=True))
            rows.append(
                [
                    k,
                    n,
                    f"{np.mean(sizes):.0f}",
                    f"{bleu:.2f}",
                    f"{bleu - full_bleu:+.2f}",
                    f"{full_seconds / seconds:.2f}x",
                    f"{same}/{len(src)}",
                ]
            )
            print(*rows[-1], flush=True)
    harness.print_table(["k", "N", "mean V'", "BLEU", "vs full", "speed", "= full"], rows)


if __name__ == "__main__":
    main()
