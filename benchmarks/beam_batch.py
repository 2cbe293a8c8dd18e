"""Batched beam search: sentences/s with batches of 32 against one sentence at a time.

Target: `Translator` with beam 5 and batch_size 32 translates at least 4x as many sentences per
second as the same Translator with batch_size 1, on the first N sentences of the test set
(test_2016_flickr, source side); both must give the same translations (the count that differ is
printed; batching changes only the padding, so any difference is a floating-point near-tie).

The model is the bundle given by `--model`, by default the newest of runs/*/bundle and models/*.
With none (or `--model random`) it is a randomly initialised model of the recipe with a freshly
trained tokenizer: such a model rarely says EOS, so every sentence decodes to its maximum
length; the ratio is still meaningful (more steps per sentence, the same work per step), the
translations are not. Rounds alternate which batch size goes first; the ratio is of the medians.

    .venv/bin/python benchmarks/beam_batch.py             # 200 sentences, 3 rounds, ~1 min
    .venv/bin/python benchmarks/beam_batch.py --quick     # 64 sentences, 3 rounds
    .venv/bin/python benchmarks/beam_batch.py --model runs/transformer-en-de/bundle --sentences 500
"""

from __future__ import annotations

import argparse
import glob
import tempfile
import time
from pathlib import Path

import harness
import torch

from nmt.bundle import BUNDLE_FILE, load_bundle
from nmt.config import parse_section
from nmt.data import read_corpus, read_lines
from nmt.models import build_model
from nmt.tokenizer import train_tokenizers
from nmt.translator import Translator

TARGET = 4.0


def newest_bundle() -> Path | None:
    """The most recently written bundle under runs/*/bundle or models/*, if any."""
    found = [Path(p) for p in (*glob.glob("runs/*/bundle"), *glob.glob("models/*"))]
    found = [p for p in found if (p / BUNDLE_FILE).is_file()]
    return max(found, key=lambda p: (p / BUNDLE_FILE).stat().st_mtime, default=None)


def bundle_translator(path: Path) -> tuple[Translator, str, str]:
    bundle = load_bundle(path)
    return Translator.from_bundle(bundle, "cpu"), bundle.src_lang, f"bundle {path}"


def random_translator(args: argparse.Namespace, tmp: Path) -> tuple[Translator, str, str]:
    """A freshly initialised model of the recipe, with a tokenizer trained on its train set."""
    recipe = harness.load_benchmark_recipe(args)
    src_texts, tgt_texts = read_corpus(recipe.data.train)
    src_tok, tgt_tok = train_tokenizers(
        recipe.tokenizer, src_texts, tgt_texts, tmp, recipe.data.src_lang, recipe.data.tgt_lang
    )
    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe.model, src_tok.vocab_size, tgt_tok.vocab_size).eval()
    cap = recipe.model.position_limit
    translator = Translator(model, src_tok, tgt_tok, recipe.search, "cpu", max_len_cap=cap)
    description = f"RANDOM {recipe.name} model (untrained: decodes to max length, translations are noise)"
    return translator, recipe.data.src_lang, description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument("--model", help="bundle folder, or 'random' (default: newest bundle, else random)")
    parser.add_argument("--sentences", type=int, default=200, help="first N test sentences (default: 200)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--beam", type=int, default=5, help="beam size (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="the batched contender (default: 32)")
    parser.add_argument("--quick", action="store_true", help="64 sentences")
    args = parser.parse_args()
    if args.quick:
        args.sentences = min(args.sentences, 64)
    harness.set_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-beam-") as tmp:
        path = newest_bundle() if args.model is None else args.model
        if path is None or path == "random":
            translator, src_lang, description = random_translator(args, Path(tmp))
        else:
            translator, src_lang, description = bundle_translator(Path(path))
    search = parse_section("search", {**translator.search.model_dump(), "beam_size": args.beam})
    texts = read_lines(harness.corpus_file(args.data, harness.TEST_SPLIT, src_lang))[: args.sentences]
    print(f"{description}; {len(texts)} sentences, beam {args.beam}, {torch.get_num_threads()} threads")

    sizes = {f"batch {args.batch_size}": args.batch_size, "batch 1": 1}
    rates: dict[str, list[float]] = {name: [] for name in sizes}
    outputs: dict[str, list[str]] = {}
    translator.translate_best(texts[:4], search)  # warm-up
    rows = []
    for round_ in range(args.rounds):
        order = list(sizes) if round_ % 2 == 0 else list(sizes)[::-1]
        for name in order:
            translator.batch_size = sizes[name]
            start = time.perf_counter()
            outputs[name] = translator.translate_best(texts, search)
            rates[name].append(len(texts) / (time.perf_counter() - start))
        batched, single = (rates[name][-1] for name in sizes)
        rows.append(
            [round_ + 1, " then ".join(order), f"{batched:.2f}", f"{single:.2f}", f"{batched / single:.2f}"]
        )

    batched, single = (harness.median(rates[name]) for name in sizes)
    rows.append(["median", "", f"{batched:.2f}", f"{single:.2f}", f"{batched / single:.2f}"])
    names = list(sizes)
    harness.print_table(["round", "order", f"{names[0]} sent/s", f"{names[1]} sent/s", "speed-up"], rows)
    differ = sum(a != b for a, b in zip(outputs[names[0]], outputs[names[1]], strict=True))
    print(f"translations that differ between {names[0]} and {names[1]}: {differ} of {len(texts)}")
    print(f"speed-up {names[0]} / {names[1]} (median sentences/s): {batched / single:.2f}x")
    harness.verdict(
        f"beam {args.beam}: {names[0]} >= {TARGET:g}x the sentences/s of {names[1]} ({batched / single:.2f}x)",
        batched / single >= TARGET,
    )


if __name__ == "__main__":
    main()
