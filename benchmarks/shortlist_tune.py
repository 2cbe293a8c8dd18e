"""Tune a shortlist's k (candidates per source token), N (frequent target tokens) and M (ids
outside it sampled for the normaliser) on Multi30k val.

For each (k, N) of the grid, builds the shortlist from the training corpus (a multilingual
bundle: every direction's, one table per target language) and, for each M (`--outside`;
`nmt.search.outside_sample`, 0: normalised over the shortlist alone), translates the validation
set with and without it, on one engine, beam 5, batch 32, in each direction asked (default:
every direction of the bundle): BLEU against the full vocabulary, the mean vocabulary size per
batch, the decoding time ratio and how many translations are the full vocabulary's. The rule the
shipped shortlists were chosen by: the smallest setting whose val BLEU is no more than 0.1 below
the full vocabulary's in every direction. `--split test` reports settings on the test set, for
after a choice on val (never to choose by). `--train-target` builds the tables from another
target side of the training corpus, line by line with its sources: the bundle's own
translations of them (`nmt distill`), as Bergamot builds its shortlists from a distilled corpus
({source} and {target} in the path stand for each direction's languages).

    .venv/bin/python benchmarks/shortlist_tune.py --model models/lstm-en-de --k 10,20,40 --frequent 100,300
    .venv/bin/python benchmarks/shortlist_tune.py --model models/transformer-en-de-fr --k 50,100 --frequent 300
    .venv/bin/python benchmarks/shortlist_tune.py --model models/lstm-attention-en-de --k 30 --frequent 100 --outside 0,64,256,1024
    .venv/bin/python benchmarks/shortlist_tune.py --model models/lstm-attention-en-de --k 30,50 --frequent 100 \
        --outside 0,256 --train-target data/distill/train.lstm-attention-en-de.de --split test
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import harness
import numpy as np

from nmt.bundle import Bundle, load_bundle
from nmt.config import SearchConfig
from nmt.data import collate_source, read_lines
from nmt.languages import Direction
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
    parser.add_argument(
        "--outside",
        default="0",
        help="comma-separated sizes M of the normaliser's sample outside the shortlist (0: none)",
    )
    parser.add_argument(
        "--score", default="dice", help="comma-separated table scores (dice, ibm1; `nmt shortlist --score`)"
    )
    parser.add_argument(
        "--copies",
        action="store_true",
        help="tables that list each source id in its own row (`nmt shortlist --copies`; a shared "
        "vocabulary): the score column says dice+copies",
    )
    parser.add_argument("--sentences", type=int, default=None, help="first N sentences (default all)")
    parser.add_argument(
        "--split",
        default="val",
        choices=["val", harness.TEST_SPLIT],
        help="the set translated (default: val)",
    )
    parser.add_argument(
        "--train-target",
        help="the target side to build the tables from instead of the training references: e.g. "
        "`nmt distill`'s translations of the training sources; {source} and {target} in it stand "
        "for each direction's languages (a multilingual bundle)",
    )
    harness.add_direction_arguments(parser)
    args = parser.parse_args()
    harness.set_threads(args.threads)
    bundle = load_bundle(args.model)
    directions = (
        [bundle.direction(args.source, args.target)] if args.source or args.target else bundle.directions
    )
    if args.train_target and len(bundle.directions) > 1 and "{target}" not in args.train_target:
        parser.error("--train-target: a multilingual bundle needs {source} and {target} in it")
    corpora = {
        d: (
            harness.corpus_file(args.data, "train", d.source),
            Path(args.train_target.format(source=d.source, target=d.target))
            if args.train_target
            else harness.corpus_file(args.data, "train", d.target),
        )
        for d in bundle.directions
    }
    translator = Translator.from_bundle(bundle, "cpu", args.backend)
    search = bundle.search.model_copy(update={"beam_size": 5, "n_best": 1})
    held_out, full = {}, {}
    for d in directions:
        src = read_lines(harness.corpus_file(args.data, args.split, d.source))[: args.sentences]
        ref = read_lines(harness.corpus_file(args.data, args.split, d.target))[: args.sentences]
        start = time.perf_counter()
        out = translator.translate_best(src, search, d.target)
        held_out[d] = src, ref
        full[d] = out, bleu_only(out, ref)[0], time.perf_counter() - start
        print(
            f"{args.model} {d} on {args.split} ({len(src)} sentences), {args.backend}: "
            f"full vocabulary BLEU {full[d][1]:.2f}; tables from {corpora[d][1]}"
        )
    rows = []
    sizes_m = [int(m) for m in args.outside.split(",")]
    grid = [
        (score, int(k), int(n))
        for score in args.score.split(",")
        for k in args.k.split(",")
        for n in args.frequent.split(",")
    ]
    for score, k, n in grid:
        table = shortlist_for_bundle(bundle, corpora, k, n, score=score, copies=args.copies)
        name = f"{score}+copies" if args.copies else score
        for m, d in ((m, d) for m in sizes_m for d in directions):
            translator.shortlist = replace(table, meta={**table.meta, "outside": m})
            rows.append([str(d), name, k, n, m, *_row(translator, search, held_out[d], full[d], d, bundle)])
            print(*rows[-1], flush=True)
        translator.shortlist = None
    harness.print_table(
        ["direction", "score", "k", "N", "M", "mean V'", "BLEU", "vs full", "speed", "= full"], rows
    )


def _row(
    translator: Translator,
    search: SearchConfig,
    sentences: tuple[list[str], list[str]],
    full: tuple[list[str], float, float],
    d: Direction,
    bundle: Bundle,
) -> list[str]:
    """The shortlisted translation of `sentences` (sources, references; val or test) into d's target against the full
    vocabulary's `full` (outputs, BLEU, seconds): mean V', BLEU, its difference, speed, = full."""
    src, ref = sentences
    shortlist = translator.shortlist
    assert shortlist is not None  # the caller's
    ids = translator.encode(src, d.target)
    sizes = []
    for batch in length_sorted_batches([len(s) + 1 for s in ids], 32, 1 << 30):
        vocabulary = shortlist.vocabulary(collate_source([ids[i] for i in batch])[0])
        sizes.append(bundle.tgt_tokenizer.vocab_size if vocabulary is None else vocabulary.numel())
    start = time.perf_counter()
    out = translator.translate_best(src, search, d.target)
    seconds = time.perf_counter() - start
    full_out, full_bleu, full_seconds = full
    bleu = bleu_only(out, ref)[0]
    same = sum(a == b for a, b in zip(out, full_out, strict=True))
    return [
        f"{np.mean(sizes):.0f}",
        f"{bleu:.2f}",
        f"{bleu - full_bleu:+.2f}",
        f"{full_seconds / seconds:.2f}x",
        f"{same}/{len(src)}",
    ]


if __name__ == "__main__":
    main()
