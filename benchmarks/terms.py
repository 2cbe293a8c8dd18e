"""Glossary terms, numbers and URLs through a model: how many come out as asked (nmt/terms.py).

Three sets, built from test_2016_flickr (en -> de):
- glossary: sentences whose source has a word of `DICTIONARY` and whose reference has its German
  term; translated with that one-entry glossary. Printed: the share of terms in the output with
  the glossary, and without it (the model alone), and how many were placed by the alignment;
  then the same with `UNUSUAL` terms, which the model alone (nearly) never writes.
- no terms: sentences with none of the dictionary's words (nor a number); translated with and without the full
  dictionary as glossary: the outputs must be identical, so BLEU is unchanged.
- numbers and URLs: sentences with a number, a URL and an e-mail address injected; the share of
  them copied verbatim.

    python benchmarks/terms.py --model models/transformer-en-de [--sentences 150]
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import DEFAULT_DATA, corpus_file, print_table, verdict  # noqa: E402
from nmt.bundle import load_bundle  # noqa: E402
from nmt.metrics import bleu_only  # noqa: E402
from nmt.terms import MASKED, PATTERNS, PLACEHOLDER, protect, restore  # noqa: E402
from nmt.translator import Translator  # noqa: E402

# written by hand: English words of Multi30k and the German word its references use most for them
DICTIONARY = {
    "dog": "Hund",
    "man": "Mann",
    "woman": "Frau",
    "boy": "Junge",
    "girl": "Mädchen",
    "street": "Straße",
    "water": "Wasser",
    "ball": "Ball",
    "shirt": "Hemd",
    "hat": "Hut",
    "beach": "Strand",
    "bike": "Fahrrad",
    "child": "Kind",
    "people": "Leute",
    "snow": "Schnee",
    "building": "Gebäude",
    "car": "Auto",
    "jacket": "Jacke",
    "guitar": "Gitarre",
    "grass": "Gras",
}
# the same words with a target term the references (nearly) never use: what the model alone misses
UNUSUAL = {
    "dog": "Vierbeiner",
    "man": "Herr",
    "woman": "Dame",
    "boy": "Knabe",
    "girl": "Maid",
    "street": "Gasse",
    "water": "Nass",
    "ball": "Kugel",
    "shirt": "Oberteil",
    "hat": "Kopfbedeckung",
    "beach": "Küste",
    "bike": "Velo",
    "child": "Sprössling",
    "people": "Menschen",
    "snow": "Neuschnee",
    "building": "Bauwerk",
    "car": "Wagen",
    "jacket": "Anorak",
    "guitar": "Klampfe",
    "grass": "Rasen",
}
NUMBERS = ["7:30", "25", "1987", "3.5", "42%", "1,200", "12/24", "8"]


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


@dataclass
class Counts:
    """Of the spans of a set: how many, how many placed through the alignment, and of those
    masked (URLs, e-mail addresses), how many the model copied as the placeholder itself."""

    spans: int = 0
    aligned: int = 0
    masked: int = 0
    copied: int = 0


def translate(
    translator: Translator, texts: list[str], glossaries: list[dict[str, str]] | dict[str, str] | None
) -> tuple[list[str], Counts]:
    """Translations with the glossary (one for all, or one per text) and the verbatim spans
    enforced, and what happened to the spans."""
    each = glossaries if isinstance(glossaries, list) else [glossaries or {}] * len(texts)
    masked = [protect(text, glossary) for text, glossary in zip(texts, each, strict=True)]
    out = translator.translate([m.text for m in masked], alignments=translator.attends)
    results, counts = [], Counts()
    for m, nbest in zip(masked, out, strict=True):
        best = nbest[0]
        text, _ = restore(m, best.text, best.alignment)
        results.append(text)
        counts.spans += len(m.spans)
        if best.alignment is not None:
            counts.aligned += sum(any(s in r for s, _ in best.alignment) for r in m.words)
        hidden = sum(span.kind in MASKED for span in m.spans)
        counts.masked += hidden
        counts.copied += min(hidden, best.text.split().count(PLACEHOLDER))
    return results, counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, action="append", required=True, help="a bundle (repeatable)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sentences", type=int, default=150, help="per set (default: %(default)s)")
    parser.add_argument("--backend", default="onnx", choices=["onnx", "torch"])
    args = parser.parse_args()
    torch.set_num_threads(1)

    def lines(lang: str) -> list[str]:
        with gzip.open(corpus_file(args.data, "test_2016_flickr", lang), "rt", encoding="utf-8") as f:
            return [line.strip() for line in f]

    src, ref = lines("en"), lines("de")
    glossary_set: list[tuple[str, str, str]] = []  # (source, source term, target term)
    plain: list[tuple[str, str]] = []
    for s, r in zip(src, ref, strict=True):
        hits = [w for w in DICTIONARY if w in words(s)]
        if not protect(s, DICTIONARY).spans:  # no term, and no number either
            plain.append((s, r))
        elif hits and DICTIONARY[hits[0]].lower() in r.lower() and len(glossary_set) < args.sentences:
            glossary_set.append((s, hits[0], DICTIONARY[hits[0]]))
    plain = plain[: args.sentences]
    injected = []
    for i, s in enumerate(src[: args.sentences]):
        number, url, mail = (
            NUMBERS[i % len(NUMBERS)],
            f"https://example.org/p/{i}?q=a",
            f"info{i}@example.com",
        )
        injected.append(f"{s.rstrip('.')} at {number} , see {url} or write to {mail} .")

    rows, passed = [], True
    for path in args.model:
        bundle = load_bundle(path)
        backend = args.backend if (path / "onnx").is_dir() or args.backend == "torch" else "torch"
        translator = Translator.from_bundle(bundle, backend=backend)
        with_terms, counts = translate(  # each sentence with its own one-entry glossary
            translator, [s for s, _, _ in glossary_set], [{term: t} for _, term, t in glossary_set]
        )
        alone = translator.translate_best([s for s, _, _ in glossary_set])
        present = sum(t in out for (_, _, t), out in zip(glossary_set, with_terms, strict=True))
        present_alone = sum(t in out for (_, _, t), out in zip(glossary_set, alone, strict=True))
        n = len(glossary_set)
        print(
            f"{path.name}: glossary terms in the output {100 * present / n:.1f}% of {n} sentences "
            f"(target 95%); the model alone {100 * present_alone / n:.1f}%; "
            f"{counts.aligned} of {counts.spans} spans placed through the alignment"
        )
        unusual, _ = translate(
            translator,
            [s for s, _, _ in glossary_set],
            [{term: UNUSUAL[term]} for _, term, _ in glossary_set],
        )
        forced = sum(UNUSUAL[term] in out for (_, term, _), out in zip(glossary_set, unusual, strict=True))
        forced_alone = sum(
            UNUSUAL[term] in out for (_, term, _), out in zip(glossary_set, alone, strict=True)
        )
        print(
            f"{path.name}: unusual glossary terms in the output {100 * forced / n:.1f}% of {n} sentences "
            f"(target 95%); the model alone {100 * forced_alone / n:.1f}%"
        )
        sources = [s for s, _ in plain]
        unchanged, _ = translate(translator, sources, DICTIONARY)
        baseline = translator.translate_best(sources)
        identical = sum(a == b for a, b in zip(unchanged, baseline, strict=True))
        bleu_with, _, _ = bleu_only(unchanged, [r for _, r in plain])
        bleu_without, _, _ = bleu_only(baseline, [r for _, r in plain])
        print(
            f"{path.name}: sentences without terms: BLEU {bleu_with:.2f} with the glossary, "
            f"{bleu_without:.2f} without; {identical} of {len(plain)} outputs identical"
        )
        copied, counts = translate(translator, injected, None)
        spans = [m.group() for text in injected for p in PATTERNS.values() for m in p.finditer(text)]
        kept = sum(
            m.group() in out
            for text, out in zip(injected, copied, strict=True)
            for p in PATTERNS.values()
            for m in p.finditer(text)
        )
        print(
            f"{path.name}: numbers, URLs and e-mail addresses copied {100 * kept / len(spans):.1f}% "
            f"of {len(spans)} (target 100%); the model wrote the placeholder {PLACEHOLDER!r} for "
            f"{counts.copied} of {counts.masked} masked spans, {counts.aligned} of {counts.spans} spans "
            f"placed through the alignment"
        )
        ok = present / n >= 0.95 and forced / n >= 0.95 and identical == len(plain) and kept == len(spans)
        passed &= ok
        rows.append(
            [
                path.name,
                f"{100 * present / n:.1f}%",
                f"{100 * present_alone / n:.1f}%",
                f"{100 * forced / n:.1f}%",
                f"{bleu_with:.2f}/{bleu_without:.2f}",
                f"{100 * kept / len(spans):.1f}%",
                "yes" if ok else "no",
            ]
        )
    print_table(
        ["model", "terms", "model alone", "unusual terms", "BLEU no-term w/wo", "verbatim copied", "meets"],
        rows,
    )
    verdict("95% of glossary terms, unchanged output without terms, 100% of numbers/URLs copied", passed)


if __name__ == "__main__":
    main()
