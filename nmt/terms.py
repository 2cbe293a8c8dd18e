"""Terms the caller controls: glossary entries, do-not-translate spans, and numbers, URLs and
e-mail addresses, which are always copied verbatim.

How they are enforced: placeholders restored through the word alignment (`nmt.alignment`).
1. `find_spans` finds every protected span of a source text (longest first, never overlapping):
   glossary source terms (matched case-insensitively at word boundaries), `do_not_translate`
   spans, URLs, e-mail addresses and numbers (`PATTERNS`, regular expressions).
2. `mask` rewrites the source: a URL, e-mail address or do-not-translate span becomes one
   placeholder word (`PLACEHOLDER`: such spans are long and foreign to the model's training
   text, and it garbles them); glossary terms and numbers stay as they are (the model translates
   them in context, which keeps the rest of the sentence fluent).
3. The model translates the masked text, with its alignment (a model with attention).
4. `restore` replaces, for every span, the target words aligned to the span's source words by
   the span's target text (the glossary's target term, else the span itself), keeping the
   punctuation around them. A span no target word is aligned to is put after the target word
   aligned to the nearest source word before it.

Without attention (the plain LSTM) there is no alignment: a span whose placeholder or text the
model copied replaces that word; any other goes in at the proportional position (source word i
of n -> target word round(i * m / n) of m). The model's own translation of a glossary term then
stays beside it: a documented weakness of models without attention.

A text without any span is not touched at all: its translation is the model's, unchanged.

Words are the texts split at whitespace, as in `nmt.alignment`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from nmt.alignment import Alignment

PLACEHOLDER = "X"  # what a masked span becomes in the source (measured: benchmarks/terms.py)

Kind = Literal["glossary", "verbatim", "url", "email", "number"]

# URLs with a scheme or starting www., e-mail addresses, and numbers with their inner separators
# (7:30, 1,000.50, 3/4, 25%); trailing sentence punctuation is not part of a URL.
PATTERNS: dict[Kind, re.Pattern[str]] = {
    "url": re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]"),
    "email": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b"),
    "number": re.compile(r"(?<![\w])[-+]?\d+(?:[.,:/]\d+)*%?(?![\w])"),
}
MASKED: frozenset[Kind] = frozenset({"url", "email", "verbatim"})
_EDGE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


@dataclass(frozen=True)
class Span:
    start: int  # characters of the source text
    end: int
    target: str  # what the translation must contain in its place
    kind: Kind


def find_spans(
    text: str, glossary: dict[str, str] | None = None, verbatim: list[str] | None = None
) -> list[Span]:
    """The protected spans of `text`, in order, none overlapping (a longer or earlier one wins)."""
    found: list[Span] = []
    for term in verbatim or []:
        found += [Span(m.start(), m.end(), m.group(), "verbatim") for m in re.finditer(re.escape(term), text)]
    for kind, pattern in PATTERNS.items():
        if _may_hold(kind, text):
            found += [Span(m.start(), m.end(), m.group(), kind) for m in pattern.finditer(text)]
    if glossary:
        pattern, targets = _glossary_pattern(tuple(glossary.items()))
        for m in pattern.finditer(text):
            target = targets.get(m.group().casefold())
            if target is None:  # a case the regex folds and str.casefold does not (rare letters)
                target = next(t for s, t in glossary.items() if re.fullmatch(re.escape(s), m.group(), re.I))
            found.append(Span(m.start(), m.end(), target, "glossary"))
    priority = {"verbatim": 0, "url": 1, "email": 1, "glossary": 2, "number": 3}
    found.sort(key=lambda s: (priority[s.kind], s.start - s.end, s.start))
    chosen: list[Span] = []
    for span in found:
        if all(span.end <= other.start or span.start >= other.end for other in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


_DIGIT = re.compile(r"\d")


@lru_cache(maxsize=256)
def _glossary_pattern(entries: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str], dict[str, str]]:
    """One pattern for a glossary's source terms (longest first: "ice cream" before "ice"), whole
    words, any case; and each term's target by its casefolded form. Cached: a stored glossary
    applies to every request of its caller."""
    targets: dict[str, str] = {}
    for source, target in entries:
        targets.setdefault(source.casefold(), target)
    terms = sorted({source for source, _ in entries}, key=len, reverse=True)
    alternatives = "|".join(re.escape(term) for term in terms)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE), targets


def _may_hold(kind: Kind, text: str) -> bool:
    """A cheap test before the pattern (most texts hold no URL, address or number; every
    translation request goes through here, cache hits included)."""
    if kind == "url":
        return "://" in text or "www." in text
    if kind == "email":
        return "@" in text
    return _DIGIT.search(text) is not None


@dataclass(frozen=True)
class Masked:
    """A source text with its spans masked: `text` goes to the model; `spans[i]` covers the words
    `words[i]` (a range of `text.split()`), and `source_word[j]` is the original word masked word
    j came from."""

    text: str
    spans: list[Span]
    words: list[range]
    source_word: list[int]


def mask(text: str, spans: list[Span]) -> Masked:
    """`text` with URL, e-mail and do-not-translate spans replaced by `PLACEHOLDER` (see above)."""
    pieces: list[str] = []
    owners: list[int] = []  # per character of the masked text, its original offset
    at = 0
    for span in spans:
        pieces.append(text[at : span.start])
        owners += range(at, span.start)
        if span.kind in MASKED:
            spaced = PLACEHOLDER
            pieces.append(spaced)
            owners += [span.start] * len(spaced)
        else:
            pieces.append(text[span.start : span.end])
            owners += range(span.start, span.end)
        at = span.end
    pieces.append(text[at:])
    owners += range(at, len(text))
    masked = "".join(pieces)
    original_word = _word_of_chars(text)
    word_starts = [m.start() for m in re.finditer(r"\S+", masked)]
    word_ends = [m.end() for m in re.finditer(r"\S+", masked)]
    source_word = [original_word[owners[start]] for start in word_starts]
    # the masked text's character offset of each span's start and end
    where = {owner: i for i, owner in reversed(list(enumerate(owners)))}
    words = []
    for span in spans:
        first = where[span.start]
        last = first + len(PLACEHOLDER) if span.kind in MASKED else where[span.end - 1] + 1
        words.append(range(_index(word_ends, first), _index(word_ends, last - 1) + 1))
    return Masked(masked, spans, words, source_word)


def _word_of_chars(text: str) -> list[int]:
    """The word index of every character (whitespace: the word after it)."""
    owner, word = [], 0
    for match in re.finditer(r"\S+|\s+", text):
        if not match.group().isspace():
            owner += [word] * len(match.group())
            word += 1
        else:
            owner += [word] * len(match.group())
    return owner


def _index(word_ends: list[int], char: int) -> int:
    """The word a character of the masked text is in (by the words' end offsets)."""
    for i, end in enumerate(word_ends):
        if char < end:
            return i
    return len(word_ends) - 1


def restore(masked: Masked, translation: str, alignment: Alignment | None) -> tuple[str, Alignment | None]:
    """The translation with every span's target text in place, and its alignment (source words of
    the original text, target words of the result); see the module docstring."""
    words = translation.split()
    if not masked.spans:
        return translation, alignment
    n_src = len(masked.text.split())
    if alignment is not None:  # the tokenizer's words may not be the whitespace words (an UNK
        # inside a word splits it): links past either end are dropped
        alignment = [(s, t) for s, t in alignment if 0 <= s < n_src and 0 <= t < len(words)]
    groups = _groups(masked, words, alignment, n_src)
    # rebuild: each span's group of target words becomes its target text, punctuation kept
    out: list[str] = []
    out_source: list[int | None] = []  # per output word, the masked source word it came from
    by_start = {group[0]: (i, group) for i, group in enumerate(groups) if group and group[0] >= 0}
    inserts: dict[int, list[int]] = {}
    for i, group in enumerate(groups):
        if group and group[0] < 0:
            inserts.setdefault(-group[0] - 1, []).append(i)
    aligned = {tgt: src for src, tgt in alignment or []}
    t = 0
    while t <= len(words):
        for i in inserts.get(t, []):
            _emit(out, out_source, masked.spans[i].target, "", "", masked.words[i].start)
        if t == len(words):
            break
        if t in by_start:
            i, group = by_start[t]
            lead = _EDGE.match(words[group[0]]).group(1)  # type: ignore[union-attr]
            trail = _EDGE.match(words[group[-1]]).group(3)  # type: ignore[union-attr]
            _emit(out, out_source, masked.spans[i].target, lead, trail, masked.words[i].start)
            for inside in group[1:]:  # spans to insert within the words this one replaced
                for j in inserts.get(inside, []):
                    _emit(out, out_source, masked.spans[j].target, "", "", masked.words[j].start)
            t = group[-1] + 1
            continue
        out.append(words[t])
        out_source.append(aligned.get(t))
        t += 1
    links = None
    if alignment is not None:
        links = [(masked.source_word[src], tgt) for tgt, src in enumerate(out_source) if src is not None]
    return " ".join(out), links


def _emit(out: list[str], sources: list[int | None], target: str, lead: str, trail: str, src: int) -> None:
    pieces = target.split() or [target]
    pieces[0] = lead + pieces[0]
    pieces[-1] = pieces[-1] + trail
    out += pieces
    sources += [src] * len(pieces)


def _groups(masked: Masked, words: list[str], alignment: Alignment | None, n_src: int) -> list[list[int]]:
    """Per span, the contiguous target words it replaces ([] none), or [-(p + 1)]: insert before
    target word p."""
    taken: set[int] = set()
    groups: list[list[int]] = []
    for span, src_words in zip(masked.spans, masked.words, strict=True):
        if alignment is not None:
            hits = sorted(t for s, t in alignment if s in src_words and t not in taken)
        else:  # without attention: a word the model copied (the placeholder, or the span itself)
            copy = PLACEHOLDER if span.kind in MASKED else masked.text.split()[src_words.start]
            hits = [t for t, w in enumerate(words) if _EDGE.match(w).group(2) == copy and t not in taken][:1]  # type: ignore[union-attr]
        if hits:
            group = _longest_run(hits)
            taken.update(group)
            groups.append(group)
            continue
        groups.append([-(_insertion(src_words.start, alignment, len(words), n_src) + 1)])
    return groups


def _longest_run(hits: list[int]) -> list[int]:
    """The longest run of consecutive target words among `hits` (sorted): scattered links to a
    span are attention noise, and the words between them are not the span's."""
    runs: list[list[int]] = [[hits[0]]]
    for t in hits[1:]:
        if t == runs[-1][-1] + 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    return max(runs, key=len)


def _insertion(src: int, alignment: Alignment | None, n_tgt: int, n_src: int) -> int:
    """Where a span of source word `src` no target word is aligned to goes: after the last target
    word aligned to a source word before it, else at the proportional position."""
    if alignment:
        before = [t for s, t in alignment if s < src]
        return max(before) + 1 if before else 0
    return min(n_tgt, round(src * n_tgt / max(n_src, 1)))


def protect(text: str, glossary: dict[str, str] | None = None, verbatim: list[str] | None = None) -> Masked:
    """`mask(text, find_spans(text, glossary, verbatim))`."""
    spans = find_spans(text, glossary, verbatim)
    return mask(text, spans) if spans else Masked(text, [], [], [])
