"""One translation request from validated input to results, top to bottom: split texts into
sentences, look every sentence up in the cache, encode the misses once (deduplicated) and refuse
any over the model's limit, decode them through the model's micro-batcher within the request's
deadline (and not at all once the client has gone), write them back, join each text's sentences
again (and their word alignments, when asked for), and record the request for the A/B report.

Sentences the translation memory has (serving/memory.py) skip the cache and the model; degenerate
output (nmt/confidence.py) is decoded again with repeated n-grams blocked before it is cached, and
every result carries its confidence.

Both the native API and the LibreTranslate-compatible endpoint translate through `run_translation`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import orjson

from nmt.alignment import Alignment, offset
from nmt.confidence import Scorer, repair_search, to_repair
from nmt.config import SearchConfig
from nmt.errors import ConfigError
from nmt.translator import Translation
from serving.ab import Group, Request, Served, new_id
from serving.batcher import QueueFull, ShuttingDown
from serving.cache import TranslationCache, cache_key, normalise
from serving.errors import ApiError
from serving.memory import first_found, lookup_keys
from serving.metrics import VariantMetrics
from serving.registry import ModelEntry
from serving.sentences import join_sentences, split_sentences
from serving.services import Services
from serving.settings import Settings

T = TypeVar("T")

ENCODE_INLINE_CHARS = 20_000  # bigger jobs are tokenized off the event loop


@dataclass(frozen=True)
class TextResult:
    text: str
    score: float
    cached: bool
    alternatives: list[tuple[str, float]]  # the n-best, best first (the best is `text`)
    alignment: Alignment | None = None  # the best's word alignment, when asked for
    confidence: float | None = None  # in [0, 1]: the least confident of the text's sentences
    low_confidence: bool = False  # some sentence is under its model's threshold
    origin: str = "model"  # "memory": every sentence came from the translation memory


@dataclass(frozen=True)
class Caller:
    """Who asked: `owner` may post references for the translations; `until_gone` completes when
    the client has closed its connection (then the work is dropped); `deadline` (time.monotonic())
    is when the whole request is abandoned, every decode it makes included (the first pass and the
    repair of degenerate translations); without one, each decode gets NMT_REQUEST_TIMEOUT_S (a
    stream's sentences)."""

    owner: str
    pinned: bool = False  # the request named its model: reported outside the A/B split
    until_gone: Callable[[], Awaitable[object]] | None = None
    deadline: float | None = None


def search_options(
    entry: ModelEntry,
    settings: Settings,
    beam_size: int | None = None,
    n_best: int | None = None,
    max_length: int | None = None,
    length_penalty: float | None = None,
) -> SearchConfig:
    """The model's search defaults with the request's options; errors name the field.

    The service's caps (NMT_MAX_BEAM_SIZE, NMT_MAX_LENGTH) are policy and checked here; what makes
    options valid at all is `SearchConfig.with_overrides`'s to say. Asking for more alternatives
    (`n_best`) than the model's beam without a beam size widens the beam to them.
    """
    if beam_size is not None and beam_size > settings.max_beam_size:
        raise ApiError(422, "beam_size", f"must be between 1 and {settings.max_beam_size}")
    if max_length is not None and max_length > settings.max_length:
        raise ApiError(422, "max_length", f"must be between 1 and {settings.max_length}")
    if beam_size is None and n_best is not None and n_best > entry.bundle.search.beam_size:
        beam_size = n_best  # n alternatives need a beam of n, also from a greedy model (a student)
    try:
        return entry.bundle.search.with_overrides(
            beam_size=beam_size, n_best=n_best, max_length=max_length, length_penalty=length_penalty
        )
    except ConfigError as error:
        field = error.key or "body"
        raise ApiError(422, field, str(error).removeprefix(f"{field}: ")) from None


def check_alignment(entry: ModelEntry, wanted: bool) -> None:
    """Refuse `return_alignment` for a model that has no attention to align with (422)."""
    if wanted and not entry.translator.attends:
        raise ApiError(422, "return_alignment", f"{entry.translator.no_attention}; ask without it")


@lru_cache(maxsize=1024)
def options_json(search: SearchConfig) -> str:
    """The search options as JSON, for cache keys (a frozen config: made once per distinct one)."""
    return search.model_dump_json()


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
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate, from a form's or a query's escapes
            raise ApiError(422, name, f"not valid Unicode (character {error.start})") from None


async def run_translation(
    services: Services,
    entry: ModelEntry,
    texts: list[str],
    search: SearchConfig,
    field: str,
    caller: Caller,
    alignment: bool = False,
) -> tuple[list[TextResult], list[str]]:
    """Translate, count and remember for feedback: (results, translation ids). `alignment`: the
    results carry word alignments (check `check_alignment` first)."""
    started = time.perf_counter()
    counters = variant_counters(services, entry, caller)
    results = await translate_texts(entry, texts, search, services, counters, field, caller, alignment)
    return results, record_served(services, entry, caller, [r.text for r in results], started)


def variant_counters(services: Services, entry: ModelEntry, caller: Caller) -> VariantMetrics:
    """The metrics a request served by `entry` counts into (pinned requests apart)."""
    return services.metrics.variant(entry.name, "pinned" if caller.pinned else entry.name)


def record_served(
    services: Services, entry: ModelEntry, caller: Caller, texts: list[str], started: float
) -> list[str]:
    """Count a request's translations (`texts`, begun at perf_counter() `started`) and remember
    them for feedback and the A/B report: their ids."""
    group: Group = "pinned" if caller.pinned else "split"
    counters = variant_counters(services, entry, caller)
    latency = time.perf_counter() - started
    now = time.time()
    ids = [new_id(now) for _ in texts]
    counters.translations.inc(len(texts))
    counters.latency.observe(latency)
    served = [
        Served(id, entry.pair, entry.name, text, caller.owner, group, now)
        for id, text in zip(ids, texts, strict=True)
    ]
    services.ab_store.record(Request(group, entry.pair, entry.name, latency, served))
    return ids


async def check_sentence_lengths(
    entry: ModelEntry, sentences: list[str], services: Services, field: str
) -> None:
    """Refuse (422) a text whose sentence is longer than the model takes, before any is decoded."""
    ids = await _encode(entry, [normalise(s) for s in sentences])
    split = [(sentences, [" "] * (len(sentences) - 1))]
    _check_lengths(
        entry, ids, list(range(len(sentences))), split, field, services.settings.max_sentence_tokens
    )


async def run_pipeline(
    services: Services,
    entry: ModelEntry,
    texts: list[str],
    search: SearchConfig,
    field: str,
    caller: Caller,
    alignment: bool = False,
    format: str = "text",
    glossary: dict[str, str] | None = None,
    verbatim: list[str] | None = None,
) -> tuple[list[TextResult], list[str]]:
    """`run_translation` with the text stages around it: HTML cut into segments and rebuilt
    (serving/markup.py), glossary terms, do-not-translate spans, numbers, URLs and e-mail
    addresses masked and restored (serving/terms.py)."""
    from serving.markup import translate_html
    from serving.terms import translate_with_terms

    attends = entry.translator.attends

    async def model(batch: list[str], aligned: bool) -> tuple[list[TextResult], list[str]]:
        return await run_translation(services, entry, batch, search, field, caller, aligned)

    async def protected(batch: list[str], aligned: bool) -> tuple[list[TextResult], list[str]]:
        return await translate_with_terms(model, batch, glossary or {}, verbatim or [], attends, aligned)

    if format == "html":
        return await translate_html(protected, texts, attends)
    return await protected(texts, alignment)


async def translate_texts(
    entry: ModelEntry,
    texts: list[str],
    search: SearchConfig,
    services: Services,
    counters: VariantMetrics,
    field: str,
    caller: Caller,
    alignment: bool = False,
) -> list[TextResult]:
    src, tgt = entry.direction.source, entry.direction.target
    cache: TranslationCache = services.cache
    options = options_json(search)
    split = [split_sentences(text) for text in texts]
    keys = [
        cache_key(entry.cache_version, src, tgt, s, options, alignment) for pieces, _ in split for s in pieces
    ]
    sentences = [s for pieces, _ in split for s in pieces]

    # each sentence's n-best: [text, score] each, or [text, score, links] with alignments
    tm = services.memory
    approved: list[str | None] = [None] * len(keys)
    if tm is not None and tm.kind == "redis" and await tm.in_use():
        # one MGET for both: the memory's keys live in the cache's Redis (no task per lookup)
        wanted = lookup_keys(entry.name, src, tgt, sentences)
        values = await cache.get_many(keys + wanted)
        raws, approved = values[: len(keys)], first_found(values[len(keys) :])
    else:
        raws = await cache.get_many(keys)
        if tm is not None and await tm.in_use():
            approved = await tm.lookup(entry.name, src, tgt, sentences)
    found, remembered = _from_memory(approved, keys, alignment)
    for key, raw in zip(keys, raws, strict=True):
        if raw is not None and key not in remembered:
            found[key] = orjson.loads(raw)
    hit = [key in found and key not in remembered for key in keys]
    misses: dict[str, int] = {}  # key -> the index of its first sentence
    for index, key in enumerate(keys):
        if key not in found and key not in misses:
            misses[key] = index
    counters.cache_hits.inc(sum(hit))
    if misses:
        counters.cache_misses.inc(len(hit) - sum(hit) - sum(key in remembered for key in keys))
        ids = await _encode(entry, [normalise(sentences[i]) for i in misses.values()])
        _check_lengths(entry, ids, list(misses.values()), split, field, services.settings.max_sentence_tokens)
        decoded = await _within_deadline(
            entry.batcher.translate(ids, search, alignment), services.settings.request_timeout_s, caller
        )
        decoded = await _repaired(entry, ids, decoded, search, services, caller, alignment)
        fresh = {
            key: [
                [t.text, round(t.score, 6), t.alignment] if alignment else [t.text, round(t.score, 6)]
                for t in nbest
            ]
            for key, nbest in zip(misses, decoded, strict=True)
        }
        found.update(fresh)
        await cache.set_many({key: orjson.dumps(value).decode() for key, value in fresh.items()})

    results, start = [], 0
    scorer = _scorer(entry)
    for pieces, separators in split:
        n = len(pieces)
        nbests = [found[key] for key in keys[start : start + n]]
        memory = [key in remembered for key in keys[start : start + n]]
        confidences = [
            1.0 if known else scorer.confidence(piece, nbest[0][0], nbest[0][1])
            for piece, nbest, known in zip(pieces, nbests, memory, strict=True)
        ]
        depth = max(len(nbest) for nbest in nbests)
        alternatives = []
        for rank in range(depth):  # the k-th best of a text joins each sentence's k-th best
            chosen = [nbest[min(rank, len(nbest) - 1)] for nbest in nbests]
            text = join_sentences([t[0] for t in chosen], separators)
            alternatives.append((text, round(sum(t[1] for t in chosen) / n, 6)))
        links = _join_alignments(pieces, [nbest[0] for nbest in nbests]) if alignment else None
        results.append(
            TextResult(
                alternatives[0][0],
                alternatives[0][1],
                all(hit[start : start + n]),
                alternatives,
                links,
                round(min(confidences), 4),
                any(scorer.low(c) for c in confidences),
                "memory" if all(memory) else "model",
            )
        )
        start += n
    return results


_SCORERS: dict[str, Scorer] = {}


def _scorer(entry: ModelEntry) -> Scorer:
    """The confidence scorer of the entry's bundle (its calibration, else the fallback)."""
    scorer = _SCORERS.get(entry.version)
    if scorer is None:
        scorer = _SCORERS[entry.version] = Scorer.for_meta(entry.bundle.meta)
    return scorer


def _from_memory(
    approved: list[str | None], keys: list[str], alignment: bool
) -> tuple[dict[str, list[list]], set[str]]:
    """The sentences the translation memory has (`approved`: each one's translation or None), as
    n-best lists of one (log-probability 0, no alignment links) by cache key, and those keys."""
    found = {
        key: [[text, 0.0, []] if alignment else [text, 0.0]]
        for key, text in zip(keys, approved, strict=True)
        if text is not None
    }
    return found, set(found)


async def _repaired(
    entry: ModelEntry,
    ids: list[list[int]],
    decoded: list[list[Translation]],
    search: SearchConfig,
    services: Services,
    caller: Caller,
    alignment: bool,
) -> list[list[Translation]]:
    """`decoded` with the degenerate best translations (nmt.confidence.degenerate) decoded again
    with repeated n-grams blocked."""
    redo = to_repair([nbest[0].text if nbest else "" for nbest in decoded])
    if not redo:
        return decoded
    again = await _within_deadline(
        entry.batcher.translate([ids[i] for i in redo], repair_search(search), alignment),
        services.settings.request_timeout_s,
        caller,
    )
    decoded = list(decoded)
    for i, nbest in zip(redo, again, strict=True):
        decoded[i] = nbest
    return decoded


def _join_alignments(sentences: list[str], best: list[list]) -> Alignment:
    """The links of a text from its sentences' ([text, score, links] each): word indices count on
    from the words (split at whitespace) of the sentences before, on both sides."""
    links: Alignment = []
    src_words = tgt_words = 0
    for sentence, (translation, _, sentence_links) in zip(sentences, best, strict=True):
        links += offset([(src, tgt) for src, tgt in sentence_links], src_words, tgt_words)
        src_words += len(sentence.split())
        tgt_words += len(translation.split())
    return links


async def _encode(entry: ModelEntry, sentences: list[str]) -> list[list[int]]:
    """The sentences' ids for the entry's direction (a multilingual model's start with its target's token)."""
    target = entry.direction.target
    if sum(map(len, sentences)) <= ENCODE_INLINE_CHARS:
        return entry.translator.encode(sentences, target)
    return await asyncio.to_thread(entry.translator.encode, sentences, target)


def _check_lengths(
    entry: ModelEntry,
    ids: list[list[int]],
    indices: list[int],
    split: list[tuple[list[str], list[str]]],
    field: str,
    service_limit: int,
) -> None:
    """Refuse a sentence longer than the model (or the service) takes: 422 naming the text."""
    model_limit = entry.translator.max_source_tokens
    limit = min(service_limit, model_limit) if model_limit else service_limit
    for tokens, index in zip(ids, indices, strict=True):
        if len(tokens) <= limit:
            continue
        text, sentence = _locate(split, index)
        name = field if len(split) == 1 else f"{field}.{text}"
        raise ApiError(
            422,
            name,
            f"sentence {sentence + 1} has {len(tokens)} tokens; {entry.name} translates at most "
            f"{limit} per sentence (split it, e.g. at punctuation or line breaks)",
            "too_long",
        )


def _locate(split: list[tuple[list[str], list[str]]], index: int) -> tuple[int, int]:
    """(text, sentence within it) of the index-th sentence of all texts."""
    for text, (pieces, _) in enumerate(split):
        if index < len(pieces):
            return text, index
        index -= len(pieces)
    raise IndexError(index)


async def _within_deadline(work: Awaitable[T], timeout_s: float, caller: Caller) -> T:
    """`work`'s result; cancelled (and its sentences dropped) once the client is gone (499) or the
    caller's deadline (else `timeout_s` from now) passes (504). A full queue is a 503 with Retry-After."""
    left = timeout_s if caller.deadline is None else max(0.0, caller.deadline - time.monotonic())
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(caller.until_gone()) if caller.until_gone else None
    waiting = {task} if gone is None else {task, gone}
    try:
        done, _ = await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in waiting:
            future.cancel()
    if task in done:
        try:
            return task.result()
        except QueueFull as full:
            raise ApiError(
                503,
                None,
                f"the service is busy ({full}); try again later",
                "overloaded",
                {"Retry-After": str(round(full.retry_after_s))},
            ) from None
        except ShuttingDown as stopping:
            raise ApiError(503, None, str(stopping), "unavailable", {"Retry-After": "5"}) from None
    if gone is not None and gone in done:
        raise ApiError(499, None, "the client closed the connection", "gone")
    raise ApiError(
        504, None, f"not translated within {timeout_s:g} s; send fewer or shorter texts", "timeout"
    )
