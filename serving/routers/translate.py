"""The native translation API: POST /v1/translate, GET /v1/models."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request, Response

from nmt.config import SearchConfig
from serving.ab import Served
from serving.deps import JsonServices, ServicesDep
from serving.errors import ApiError
from serving.registry import ModelEntry, RoutingError
from serving.schemas import Alternative, ModelsResponse, TranslateRequest, TranslateResponse, TranslationOut
from serving.services import Services
from serving.translation import TextResult, check_texts, search_options, translate_texts

router = APIRouter(tags=["translate"])


def route(services: Services, src: str, tgt: str, model: str | None, client_id: str | None) -> ModelEntry:
    try:
        return services.registry.route(src, tgt, model, client_id)
    except RoutingError as error:
        raise ApiError(400, error.field, str(error)) from None


async def run_translation(
    services: Services, entry: ModelEntry, texts: list[str], search: SearchConfig, response: Response
) -> tuple[list[TextResult], list[str]]:
    """Translate, count, remember for feedback and name the variant: (results, translation ids)."""
    started = time.perf_counter()
    variant = entry.name
    results = await translate_texts(entry, variant, texts, search, services.cache, services.metrics)
    latency = time.perf_counter() - started
    ids = [uuid.uuid4().hex for _ in results]
    counters = services.metrics.variant(entry.name, variant)
    counters.translations.inc(len(results))
    counters.latency.observe(latency)
    served = [Served(id, entry.pair, variant, result.text) for id, result in zip(ids, results, strict=True)]
    services.in_background(services.ab_store.record(served, entry.pair, variant, latency))
    response.headers["X-Model-Variant"] = variant
    response.headers["X-Model-Version"] = entry.version
    return results, ids


@router.post(
    "/v1/translate",
    response_model=TranslateResponse,
    response_model_exclude_none=True,
    summary="Translate one text or a list of texts",
)
async def translate(body: TranslateRequest, request: Request, services: JsonServices) -> Response:
    settings = services.settings
    texts = [body.text] if isinstance(body.text, str) else body.text
    check_texts(texts, settings, "text")
    client_id = request.headers.get(services.settings.client_id_header)
    entry = route(services, body.source, body.target, body.model, client_id)
    search = search_options(
        entry, settings, body.beam_size, body.n_best, body.max_length, body.length_penalty
    )
    response = Response(media_type="application/json")
    results, ids = await run_translation(services, entry, texts, search, response)
    # serialised here, once: returning the model would make FastAPI validate it a second time
    response.body = (
        TranslateResponse(
            translations=[
                TranslationOut(
                    id=id,
                    text=result.text,
                    model=entry.name,
                    variant=entry.name,
                    version=entry.version,
                    cached=result.cached,
                    score=result.score,
                    alternatives=[Alternative(text=t, score=s) for t, s in result.alternatives]
                    if search.n_best > 1
                    else None,
                )
                for id, result in zip(ids, results, strict=True)
            ]
        )
        .model_dump_json(exclude_none=True)
        .encode()
    )
    response.headers["content-length"] = str(len(response.body))
    return response


@router.get("/v1/models", response_model=ModelsResponse, summary="The models served, and how pairs route")
async def models(services: ServicesDep) -> ModelsResponse:
    registry = services.registry
    return ModelsResponse(
        models=[entry.describe() for entry in registry.entries.values()],
        defaults={pair: entry.name for pair, entry in registry.defaults.items()},
        ab_split=registry.ab_split,
    )
