"""Padding: the share of padded positions in one epoch of training batches.

Target: at most 10% of the positions of the source and target tensors are padding over one full
epoch of the train set, at the recipe's `train.batch_tokens`, with the batches the training loop
uses (`ParallelCorpus.batches`: sorted by length, cut to a token budget, shuffled).

For contrast the table also shows other budgets (2048, 4096, 8192) and a baseline without
bucketing: pairs in random order, cut greedily to the same token budget by the same rule
(``pairs * longest side <= batch_tokens``, counting EOS / BOS). The tokenizer is trained on the
train set as the recipe says (a few seconds) unless `--spm` gives one; pairs are filtered with the
recipe's `max_tokens` / `max_ratio`, as in training. Nothing is timed, so this one is not noisy.

    .venv/bin/python benchmarks/padding.py             # ~5 s
    .venv/bin/python benchmarks/padding.py --quick     # the recipe's budget only
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import harness
import numpy as np

from nmt.data import ParallelCorpus, read_corpus
from nmt.tokenizer import Tokenizer, train_tokenizers

TARGET = 0.10
BUDGETS = (2048, 4096, 8192)


def random_batches(corpus: ParallelCorpus, batch_tokens: int, seed: int) -> list[list[int]]:
    """Pairs in random order, cut by the rule of `make_batches` but without sorting by length."""
    src_lens, tgt_lens = corpus.src_lens + 1, corpus.tgt_lens + 1  # + EOS / BOS
    order = np.random.default_rng(seed).permutation(len(corpus))
    batches, start, longest = [], 0, 0
    for position, index in enumerate(order):
        longest = max(longest, src_lens[index], tgt_lens[index])
        if position > start and (position - start + 1) * longest > batch_tokens:
            batches.append(order[start:position].tolist())
            start, longest = position, max(src_lens[index], tgt_lens[index])
    batches.append(order[start:].tolist())
    return batches


def side_padding(lens: np.ndarray, batches: list[list[int]]) -> float:
    """Padded share of one side's (B, L) tensors; `lens` already counts the EOS / BOS."""
    padded = total = 0
    for indices in batches:
        batch = lens[indices]
        total += len(batch) * int(batch.max())
        padded += len(batch) * int(batch.max()) - int(batch.sum())
    return padded / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument("--spm", type=Path, help="a joint SentencePiece model to use (default: train one)")
    parser.add_argument("--quick", action="store_true", help="only the recipe's batch_tokens")
    args = parser.parse_args()
    harness.set_threads(args.threads)
    recipe = harness.load_benchmark_recipe(args)
    data, cfg = recipe.data, recipe.train

    src_texts, tgt_texts = read_corpus(data.train)
    with tempfile.TemporaryDirectory(prefix="bench-padding-") as tmp:
        if args.spm:
            src_tok = tgt_tok = Tokenizer.load(args.spm)
        else:
            src_tok, tgt_tok = train_tokenizers(
                recipe.tokenizer, src_texts, tgt_texts, Path(tmp), data.src_lang, data.tgt_lang
            )
        corpus, report = ParallelCorpus.filtered(
            src_tok.encode(src_texts), tgt_tok.encode(tgt_texts), data.max_tokens, data.max_ratio
        )
    print(
        f"{data.train.src or data.train.tsv}: {report}; vocab {tgt_tok.vocab_size}, epoch 1, seed {cfg.seed}"
    )

    budgets = [cfg.batch_tokens] if args.quick else sorted({*BUDGETS, cfg.batch_tokens})
    rows, at_recipe = [], 0.0
    for budget in budgets:
        bucketed = corpus.batches(budget, cfg.seed, epoch=0)
        baseline = random_batches(corpus, budget, cfg.seed)
        fraction = corpus.padding_fraction(bucketed)
        if budget == cfg.batch_tokens:
            at_recipe = fraction
        rows.append(
            [
                f"{budget}{' (recipe)' if budget == cfg.batch_tokens else ''}",
                len(bucketed),
                f"{len(corpus) / len(bucketed):.1f}",
                f"{side_padding(corpus.src_lens + 1, bucketed):.1%}",
                f"{side_padding(corpus.tgt_lens + 1, bucketed):.1%}",
                f"{fraction:.1%}",
                len(baseline),
                f"{corpus.padding_fraction(baseline):.1%}",
            ]
        )
    headers = [
        "batch_tokens",
        "batches",
        "pairs/batch",
        "src pad",
        "tgt pad",
        "padding",
        "random batches",
        "random padding",
    ]
    harness.print_table(headers, rows)
    harness.verdict(
        f"padding <= {TARGET:.0%} at batch_tokens {cfg.batch_tokens} ({at_recipe:.1%})", at_recipe <= TARGET
    )


if __name__ == "__main__":
    main()
