"""Glossaries and verbatim spans in the service: the request's checks, the glossary stored per
caller, and translation with `nmt.terms` (placeholders restored through the alignment).

A request's `glossary` is merged over the caller's stored one (`PUT /v1/glossary`): both apply,
the request's entry winning for a term in both. Numbers, URLs and e-mail addresses are copied
verbatim always, glossary or not.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable

import orjson

from nmt.terms import Masked, protect, restore
from serving.errors import ApiError
from serving.services import Services
from serving.settings import Settings
from serving.store import Store
from serving.translation import TextResult

Run = Callable[[list[str], bool], Awaitable[tuple[list[TextResult], list[str]]]]


def check_glossary(glossary: dict[str, str], settings: Settings, field: str = "glossary") -> None:
    """Refuse empty terms and glossaries over NMT_MAX_GLOSSARY_TERMS, naming the term (422)."""
    if len(glossary) > settings.max_glossary_terms:
        raise ApiError(
            422,
            field,
            f"at most {settings.max_glossary_terms} terms, got {len(glossary)} (NMT_MAX_GLOSSARY_TERMS)",
        )
    for source, target in glossary.items():
        if not source.strip():
            raise ApiError(422, f"{field}.{source}", "a source term must not be empty")
        if not target.strip():
            raise ApiError(422, f"{field}.{source}", "the target term must not be empty")
        if len(source) > settings.max_term_chars or len(target) > settings.max_term_chars:
            raise ApiError(
                422, f"{field}.{source}", f"terms have at most {settings.max_term_chars} characters"
            )


def check_verbatim(spans: list[str], settings: Settings, field: str = "do_not_translate") -> None:
    if len(spans) > settings.max_glossary_terms:
        raise ApiError(422, field, f"at most {settings.max_glossary_terms} spans, got {len(spans)}")
    for i, span in enumerate(spans):
        if not span.strip():
            raise ApiError(422, f"{field}.{i}", "must not be empty")
        if len(span) > settings.max_term_chars:
            raise ApiError(422, f"{field}.{i}", f"at most {settings.max_term_chars} characters")


async def request_terms(
    services: Services, owner: str, glossary: dict[str, str] | None, verbatim: list[str] | None
) -> tuple[dict[str, str], list[str]]:
    """The request's glossary merged over the caller's stored one, and its verbatim spans; checked."""
    settings = services.settings
    if glossary:
        check_glossary(glossary, settings)
    if verbatim:
        check_verbatim(verbatim, settings)
    stored = await Glossaries(services).get(owner, strict=False)
    return ({**stored, **glossary} if glossary else stored), verbatim or []


RECENT_ENTRIES = 10_000
REREAD_S = 2.0  # a stored glossary read is reused this long (other replicas see a change that late)


class Glossaries:
    """The glossary stored per caller (its API key, else its client id or address: `deps.owner`).

    Every translation request reads its caller's glossary; with Redis that would be one more round
    trip per cache hit, so a read is kept in the process for `REREAD_S` (this process's own writes
    are seen at once)."""

    def __init__(self, services: Services) -> None:
        assert services.glossaries is not None
        self.store: Store = services.glossaries

    async def get(self, owner: str, strict: bool = True) -> dict[str, str]:
        """`strict` (GET /v1/glossary): read the store, a Redis failure being a 503. Else (when
        translating) a recent read may serve, and on a Redis failure the request goes on without
        the stored glossary, as it goes on uncached: a Redis outage never fails a translation."""
        now = time.monotonic()
        kept = None if strict else self.store.recent.get(owner)  # GET /v1/glossary reads the store
        if kept is not None and kept[1] > now:
            return kept[0]
        try:
            raw = await self.store.get(owner)
        except ApiError:
            if strict:
                raise
            return {}
        glossary = orjson.loads(raw) if raw else {}
        if len(self.store.recent) >= RECENT_ENTRIES:
            self.store.recent.clear()
        self.store.recent[owner] = (glossary, now + REREAD_S)
        return glossary

    async def put(self, owner: str, glossary: dict[str, str]) -> None:
        await self.store.set(owner, orjson.dumps(glossary).decode())
        self.store.recent.pop(owner, None)

    async def delete(self, owner: str) -> bool:
        self.store.recent.pop(owner, None)
        return await self.store.delete(owner)


async def translate_with_terms(
    run: Run,
    texts: list[str],
    glossary: dict[str, str],
    verbatim: list[str],
    attends: bool,
    alignment: bool,
) -> tuple[list[TextResult], list[str]]:
    """`run(texts, alignment)` with the texts' protected spans masked and restored. Texts without
    any span go to the model untouched; the others are translated with alignments when the model
    has attention (and restored without them otherwise: see nmt/terms.py)."""
    masked: list[Masked] = [protect(text, glossary, verbatim) for text in texts]
    if not any(m.spans for m in masked):
        return await run(texts, alignment)
    results, ids = await run([m.text for m in masked], alignment or attends)
    restored = []
    for m, result in zip(masked, results, strict=True):
        text, links = restore(m, result.text, result.alignment)
        alternatives = [(text, result.score)] + [
            (restore(m, alt, None)[0], score) for alt, score in result.alternatives[1:]
        ]
        restored.append(
            dataclasses.replace(
                result, text=text, alternatives=alternatives, alignment=links if alignment else None
            )
        )
    return restored, ids
