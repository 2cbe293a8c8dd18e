"""`format: "html"` in the service: each text is parsed (nmt/markup.py), its segments translated
as texts of their own (with alignments when the model has attention), and the page rebuilt."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from nmt.markup import parse
from serving.ab import new_id

if TYPE_CHECKING:
    from serving.translation import TextResult

Run = Callable[[list[str], bool], Awaitable[tuple[list["TextResult"], list[str]]]]


async def translate_html(run: Run, texts: list[str], attends: bool) -> tuple[list[TextResult], list[str]]:
    """`run(segments, alignment)` over every text's segments, then each page rebuilt: one result
    per text (its score the mean of its segments'; its id the first segment's, for feedback)."""
    from serving.translation import TextResult

    documents = [parse(text) for text in texts]
    segments = [segment for document in documents for segment in document.segments]
    results, ids = await run(segments, attends) if segments else ([], [])
    out, out_ids, start = [], [], 0
    for text, document in zip(texts, documents, strict=True):
        n = len(document.segments)
        mine = results[start : start + n]
        if n == 0:  # markup without text: nothing to translate
            out.append(TextResult(text, 0.0, True, [(text, 0.0)]))
            out_ids.append(new_id(time.time()))
            continue
        page = document.render([(r.text, r.alignment) for r in mine])
        score = sum(r.score for r in mine) / n
        out.append(TextResult(page, score, all(r.cached for r in mine), [(page, score)]))
        out_ids.append(ids[start])
        start += n
    return out, out_ids
