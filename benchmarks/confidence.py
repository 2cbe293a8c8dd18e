"""Confidence: does it tell in-domain sentences from everyday ones the models were not trained on?

Target: for each bundle, the confidence of its translations (`nmt.confidence`, through the
bundle's calibration fitted on val by `nmt calibrate`) separates test_2016_flickr (in-domain,
positives) from benchmarks/data/everyday.en (120 everyday sentences written for this: messages,
appointments, shopping, computers; negatives) with a ROC AUC of at least 0.85. Degenerate output is
decoded again with repetition blocking first, as the service does. Also printed: the share of each
set flagged low_confidence, and how many translations were degenerate before and after repair.
Nothing is timed.

    .venv/bin/python benchmarks/confidence.py --threads 1                   # the shipped bundles, ~1 min
    .venv/bin/python benchmarks/confidence.py --model models/lstm-en-de --sentences 300
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness

from nmt.bundle import load_bundle
from nmt.confidence import Scorer, degenerate, roc_auc, translate_checked
from nmt.data import read_lines
from nmt.translator import Translator

TARGET = 0.85
EVERYDAY = Path(__file__).parent / "data" / "everyday.en"
SHIPPED = (
    "models/transformer-en-de-fr",
    "models/transformer-en-de",
    "models/lstm-attention-en-de",
    "models/lstm-en-de",
)


def measure(bundle_path: Path, in_domain: list[str], everyday: list[str]) -> dict[str, float]:
    """ROC AUC and flagged shares of one bundle's confidence on the two sets."""
    bundle = load_bundle(bundle_path)
    translator = Translator.from_bundle(bundle, "cpu", "torch")
    scorer = Scorer.for_meta(bundle.meta)
    texts = in_domain + everyday
    # both sets are English, translated into German (a multilingual bundle is asked for that)
    first = [nbest[0].text for nbest in translator.translate(texts, bundle.search, target="de")]
    best = translate_checked(translator, texts, bundle.search, target="de")
    confidence = [scorer.confidence(s, t.text, t.score) for s, t in zip(texts, best, strict=True)]
    labels = [True] * len(in_domain) + [False] * len(everyday)
    low = [scorer.low(c) for c in confidence]
    n = len(in_domain)
    return {
        "auc": roc_auc(confidence, labels),
        "low_in": sum(low[:n]) / n,
        "low_out": sum(low[n:]) / len(everyday),
        "degenerate": sum(map(degenerate, first)),
        "left": sum(degenerate(t.text) for t in best),
        "calibrated": scorer.calibration is not None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", action="append", help="bundle folder (repeatable; default: the shipped ones)"
    )
    parser.add_argument("--data", type=Path, default=harness.DEFAULT_DATA)
    parser.add_argument("--everyday", type=Path, default=EVERYDAY, help="out-of-domain sentences")
    parser.add_argument("--sentences", type=int, default=0, help="in-domain sentences (0: all)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    harness.set_threads(args.threads)
    in_domain = read_lines(harness.corpus_file(args.data, "test_2016_flickr", "en"))
    in_domain = in_domain[: args.sentences] if args.sentences else in_domain
    everyday = read_lines(args.everyday)
    rows, passed = [], True
    for model in args.model or SHIPPED:
        found = measure(Path(model), in_domain, everyday)
        ok = found["auc"] >= TARGET
        passed &= ok
        rows.append(
            [
                Path(model).name,
                "yes" if found["calibrated"] else "no (fallback)",
                f"{found['auc']:.3f}",
                f"{100 * found['low_in']:.1f}%",
                f"{100 * found['low_out']:.1f}%",
                f"{found['degenerate']} -> {found['left']}",
            ]
        )
        print(
            f"{Path(model).name}: ROC AUC {found['auc']:.3f} over {len(in_domain)} test_2016_flickr "
            f"vs {len(everyday)} everyday sentences (target {TARGET})"
        )
    print()
    harness.print_table(
        [
            "bundle",
            "calibrated",
            "ROC AUC",
            "low (in-domain)",
            "low (everyday)",
            "degenerate -> after repair",
        ],
        rows,
    )
    harness.verdict(f"ROC AUC >= {TARGET} for every bundle", passed)


if __name__ == "__main__":
    main()
