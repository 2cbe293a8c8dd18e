"""One translation request from validated input to results: split texts into sentences, look
every sentence up in the cache, decode only the misses (deduplicated) through the model's
micro-batcher, write them back, and join each text's sentences again.

Both the native API and the LibreTranslate-compatible endpoint translate through `translate_texts`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nmt.config import SearchConfig
from serving.cache import TranslationCache, cache_key, normalise
from serving.errors import ApiError
from serving.metrics import Metrics
from serving.registry import ModelEntry
from serving.sentences import join_sentences, split_sentences
from serving.settings import Settings


@dataclass(frozen=True)
class TextResult:
    text: str
    score: float
    cached: bool
    alternatives: list[tuple[str, float]]  # the n-best, best first (the best is `text`)


def search_options(
    entry: ModelEntry,
    settings: Settings,
    beam_size: int | None = None,
    n_best: int | None = None,
    max_length: int | None = None,
    length_penalty: float | None = None,
) -> SearchConfig:
    """The model's search defaults with the request's options; limits are errors naming the field."""
    if beam_size is not None and beam_size > settings.max_beam_size:
        raise ApiError(422, "beam_size", f"must be between 1 and {settings.max_beam_size}")
    if max_length is not None and max_length > settings.max_length:
        raise ApiError(422, "max_length", f"must be between 1 and {settings.max_length}")
    if beam_size is None and n_best is None and max_length is None and length_penalty is None:
        return entry.bundle.search
    options = entry.bundle.search.model_dump()
    given = {
        "beam_size": beam_size,
        "n_best": n_best,
        "max_length": max_length,
        "length_penalty": length_penalty,
    }
    options.update((key, value) for key, value in given.items() if value is not None)
    if options["n_best"] > options["beam_size"]:
        raise ApiError(422, "n_best", f"must not exceed beam_size ({options['beam_size']})")
    return SearchConfig(**options)


def check_texts(texts: list[str], settings: Settings, field: str) -> None:
    """Refuse empty or over-long texts and over-long lists, naming the field (and the item)."""
    if not texts:
        raise ApiError(422, field, "must not be an empty list")
    if len(texts) > settings.max_texts:
        raise ApiError(422, field, f"at most {settings.max_texts} texts per request, got {len(texts)}")
    for i, text in enumerate(texts):
        name = field if len(texts) == 1 else f"{field}.{i}"
        if not text.strip():
            raise ApiError(422, name, "must not be empty")
        if len(text) > settings.max_chars:
            raise ApiError(422, name, f"at most {settings.max_chars} characters, got {len(text)}")


async def translate_texts(
    entry: ModelEntry,
    variant: str,
    texts: list[str],
    search: SearchConfig,
    cache: TranslationCache,
    metrics: Metrics,
) -> list[TextResult]:
    src, tgt = entry.bundle.src_lang, entry.bundle.tgt_lang
    options = search.model_dump_json()
    split = [split_sentences(text) for text in texts]
    keys = [cache_key(entry.version, src, tgt, s, options) for pieces, _ in split for s in pieces]
    sentences = [s for pieces, _ in split for s in pieces]

    found: dict[str, list[tuple[str, float]]] = {}
    for key, raw in zip(keys, await cache.get_many(keys), strict=True):
        if raw is not None:
            found[key] = [(text, score) for text, score in json.loads(raw)]
    hit = [key in found for key in keys]
    misses: dict[str, str] = {}  # key -> sentence, once per key
    for key, sentence in zip(keys, sentences, strict=True):
        if key not in found and key not in misses:
            misses[key] = normalise(sentence)
    counters = metrics.variant(entry.name, variant)
    counters.cache_hits.inc(sum(hit))
    if not all(hit):
        counters.cache_misses.inc(len(hit) - sum(hit))

    if misses:
        decoded = await entry.batcher.translate(list(misses.values()), search)
        fresh = {
            key: [(t.text, round(t.score, 6)) for t in nbest]
            for key, nbest in zip(misses, decoded, strict=True)
        }
        found.update(fresh)
        await cache.set_many({key: json.dumps(value, ensure_ascii=False) for key, value in fresh.items()})

    results, start = [], 0
    for pieces, separators in split:
        n = len(pieces)
        nbests = [found[key] for key in keys[start : start + n]]
        depth = max(len(nbest) for nbest in nbests)
        alternatives = []
        for rank in range(depth):  # the k-th best of a text joins each sentence's k-th best
            chosen = [nbest[min(rank, len(nbest) - 1)] for nbest in nbests]
            text = join_sentences([t for t, _ in chosen], separators)
            alternatives.append((text, round(sum(score for _, score in chosen) / n, 6)))
        results.append(
            TextResult(alternatives[0][0], alternatives[0][1], all(hit[start : start + n]), alternatives)
        )
        start += n
    return results
