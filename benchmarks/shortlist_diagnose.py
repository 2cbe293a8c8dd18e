"""Why a shortlist changes translations: tokens missing from the union, or its normaliser.

Translates Multi30k val (never test, unless `--split test_2016_flickr` is asked for a diagnosis) with a
bundle's full vocabulary and with its shortlist, on PyTorch, beam 5, batch 32, and prints:
- how many translations the shortlist changes;
- how many tokens of the full vocabulary's translations lie outside their batch's union, and in
  how many translations (those a shortlist cannot give back), and how many of those tokens are
  in the sentence's own source (copies a shared vocabulary could add to the union);
- the probability mass outside the union at each step of the full vocabulary's translations
  (teacher-forced): the mean, and the 90th and 99th percentiles of the steps, the renormalisation
  a shortlist without a sample outside (`--outside 0`) adds to every log-probability.

    .venv/bin/python benchmarks/shortlist_diagnose.py --model models/lstm-attention-en-de
    .venv/bin/python benchmarks/shortlist_diagnose.py --model models/transformer-en-de-fr --source fr --target en
"""

from __future__ import annotations

import argparse

import harness
import numpy as np
import torch

from nmt.bundle import load_bundle
from nmt.data import collate_source, read_lines
from nmt.shortlist import require_shortlist
from nmt.translator import Translator, length_sorted_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument("--model", default="models/lstm-attention-en-de")
    parser.add_argument("--split", default="val", choices=["val", harness.TEST_SPLIT])
    harness.add_direction_arguments(parser)
    args = parser.parse_args()
    harness.set_threads(args.threads)
    bundle = load_bundle(args.model)
    direction = (
        bundle.direction(args.source, args.target) if args.source or args.target else bundle.direction()
    )
    split = args.split
    texts = read_lines(harness.corpus_file(args.data, split, direction.source))
    translator = Translator.from_bundle(bundle, "cpu", "torch")
    search = bundle.search.model_copy(update={"beam_size": 5, "n_best": 1})
    full = translator.translate_best(texts, search, direction.target)
    shortlist = require_shortlist(bundle)
    translator.shortlist = shortlist
    short = translator.translate_best(texts, search, direction.target)
    model = bundle.load_model().eval()
    ids = translator.encode(texts, direction.target)
    outside_tokens = tokens = outside_sentences = copies = 0
    inside_mass = []
    for batch in length_sorted_batches([len(s) + 1 for s in ids], 32, 1 << 30):
        src, lengths = collate_source([ids[i] for i in batch])
        vocabulary = shortlist.vocabulary(src)
        if vocabulary is None:
            continue
        allowed = set(vocabulary.tolist())
        outputs = bundle.tgt_tokenizer.encode([full[i] for i in batch])
        for i, output in zip(batch, outputs, strict=True):
            missing = [token for token in output if token not in allowed]
            own = set(ids[i])
            outside_tokens, tokens, outside_sentences = (
                outside_tokens + len(missing),
                tokens + len(output),
                outside_sentences + bool(missing),
            )
            copies += sum(token in own for token in missing)
        steps = max(len(o) for o in outputs) + 1
        tgt_in = torch.zeros(len(batch), steps, dtype=torch.long)
        mask = torch.zeros(len(batch), steps, dtype=torch.bool)
        tgt_in[:, 0] = 2  # BOS
        for row, output in enumerate(outputs):
            tgt_in[row, 1 : len(output) + 1] = torch.tensor(output, dtype=torch.long)
            mask[row, : len(output) + 1] = True
        with torch.inference_mode():
            probs = model(src, lengths, tgt_in).float().softmax(-1)  # (B, T, V)
        inside_mass.append(probs[..., vocabulary].sum(-1)[mask].numpy())
    outside = 1 - np.concatenate(inside_mass)
    changed = sum(a != b for a, b in zip(full, short, strict=True))
    print(f"{bundle.name} {direction} on {split} ({len(texts)} sentences), shortlist k {shortlist.meta['k']}, "
          f"N {shortlist.meta['frequent']}, M {shortlist.outside}")  # fmt: skip
    print(f"translations the shortlist changes: {changed}")
    print(
        f"tokens of the full vocabulary's translations outside their batch's union: {outside_tokens} of "
        f"{tokens}, in {outside_sentences} translations; {copies} of them in the sentence's own source"
    )
    print(
        f"mass outside the union at the steps of those translations: mean {outside.mean():.1%}, "
        f"90th percentile {np.percentile(outside, 90):.1%}, 99th {np.percentile(outside, 99):.1%}"
    )


if __name__ == "__main__":
    main()
