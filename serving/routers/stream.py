"""POST /v1/translate/stream: one text translated sentence by sentence as server-sent events.

The body is /v1/translate's with one text. Everything that can be refused is refused before the
stream starts, as a normal 4xx JSON error: the body, the route, the search options, a sentence
over the model's limit. Then the answer is `text/event-stream`:

    event: sentence   data: {"index": 0, "source", "text", "score", "confidence", "low_confidence",
                             "origin", "cached"[, "alternatives"][, "alignment"]}      (in order)
    event: done       data: {"id", "text" (joined), "sentences", "cached", "memory",
                             "confidence", "low_confidence", "model", "version"}
    event: error      data: {"error": {"type", "field", "message"}}    (instead of done, then the end)

StreamingResponse rather than sse-starlette: the events are three lines each (`serving.stream.
sse_event`), and Starlette's StreamingResponse already cancels the stream when the client
disconnects, which is what stops the work; sse-starlette would add a dependency for pings this
stream does not need (an event comes per sentence).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from nmt.config import SearchConfig
from serving.deps import authorize, get_services, owner, parse_json, require_json
from serving.errors import ApiError
from serving.registry import ModelEntry
from serving.routers.translate import finite, route, variant_headers
from serving.schemas import TranslateRequest
from serving.sentences import join_sentences, split_sentences
from serving.services import Services
from serving.stream import in_order, sse_event
from serving.translation import (
    Caller,
    TextResult,
    check_alignment,
    check_sentence_lengths,
    check_texts,
    record_served,
    search_options,
    translate_texts,
    variant_counters,
)

log = logging.getLogger("nmt.serving.stream")

router = APIRouter(tags=["translate"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": TranslateRequest.model_json_schema()}},
    }
}


@router.post(
    "/v1/translate/stream",
    openapi_extra=_BODY,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
    summary="Translate one text sentence by sentence, as server-sent events",
)
async def translate_stream(request: Request) -> StreamingResponse:
    services = await get_services(request)
    key = await authorize(request, services)
    require_json(request)
    body = parse_json(TranslateRequest, await request.body())
    if not isinstance(body.text, str):
        raise ApiError(422, "text", "one text per stream (a string, not a list)")
    check_texts([body.text], services.settings, "text")
    client_id = request.headers.get(services.settings.client_id_header)
    entry = route(services, body.source, body.target, body.model, client_id)
    search = search_options(
        entry, services.settings, body.beam_size, body.n_best, body.max_length, body.length_penalty
    )
    check_alignment(entry, body.return_alignment)
    sentences, separators = split_sentences(body.text)
    await check_sentence_lengths(entry, sentences, services, "text")
    # no `until_gone`: Starlette's StreamingResponse listens for the disconnect and cancels the stream
    caller = Caller(owner(request, services, key), body.model is not None)
    events = _events(services, entry, sentences, separators, search, caller, body.return_alignment)
    headers = {**variant_headers(entry), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def _sentence_event(index: int, source: str, result: TextResult, search: SearchConfig) -> dict:
    item = {
        "index": index,
        "source": source,
        "text": result.text,
        "score": finite(result.score),
        "confidence": result.confidence,
        "low_confidence": result.low_confidence,
        "origin": result.origin,
        "cached": result.cached,
    }
    if search.n_best > 1:
        item["alternatives"] = [{"text": t, "score": finite(s)} for t, s in result.alternatives]
    if result.alignment is not None:
        item["alignment"] = result.alignment
    return item


async def _events(
    services: Services,
    entry: ModelEntry,
    sentences: list[str],
    separators: list[str],
    search: SearchConfig,
    caller: Caller,
    alignment: bool,
) -> AsyncIterator[bytes]:
    started = time.perf_counter()
    counters = variant_counters(services, entry, caller)

    async def translate(group: list[str]) -> list[TextResult]:
        return await translate_texts(entry, group, search, services, counters, "text", caller, alignment)

    results: list[TextResult] = []
    try:
        async for index, result in in_order(sentences, translate):
            results.append(result)
            yield sse_event("sentence", _sentence_event(index, sentences[index], result, search))
    except ApiError as error:
        yield sse_event(
            "error", {"error": {"type": error.type, "field": error.field, "message": error.message}}
        )
        return
    except Exception:
        log.exception("the stream of %d sentences failed", len(sentences))
        message = "internal error; see the service log"
        yield sse_event("error", {"error": {"type": "internal", "field": None, "message": message}})
        return
    text = join_sentences([r.text for r in results], separators)
    (id,) = record_served(services, entry, caller, [text], started)
    confidence = min(r.confidence for r in results if r.confidence is not None)
    done = {
        "id": id,
        "text": text,
        "sentences": len(results),
        "cached": sum(r.cached for r in results),
        "memory": sum(r.origin == "memory" for r in results),
        "confidence": confidence,
        "low_confidence": any(r.low_confidence for r in results),
        "model": entry.name,
        "version": entry.version,
    }
    yield sse_event("done", done)
