"""The translation memory's endpoints: PUT /v1/memory (approve a sentence's translation), GET and
DELETE /v1/memory?source=&target=&text=[&model=]. See serving/memory.py for how entries match.

With API keys set, reading needs a key and writing (PUT, DELETE) a memory key (NMT_MEMORY_KEYS).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from serving.deps import authorize, get_services, parse_json, require_json
from serving.errors import ApiError
from serving.memory import ANY_MODEL, MemoryUnavailable
from serving.routers.translate import route
from serving.sentences import split_sentences
from serving.services import Services
from serving.translation import check_texts

router = APIRouter(tags=["Translation memory"])


class MemoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: StrictStr = Field(min_length=2, max_length=16, examples=["en"])
    target: StrictStr = Field(min_length=2, max_length=16, examples=["de"])
    text: StrictStr = Field(description="one source sentence (matched NFC, whitespace collapsed)")
    translation: StrictStr = Field(description="its approved translation")
    model: StrictStr | None = Field(
        None, max_length=256, description="only for this model family (a model name); default: every model"
    )


class MemoryOut(BaseModel):
    source: str
    target: str
    model: str | None
    text: str
    translation: str


_PUT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": MemoryEntry.model_json_schema()}},
    }
}


def _family(services: Services, source: str, target: str, model: str | None) -> str:
    """The entry's model family, once the pair (and the model) are known to be served (else 4xx
    naming source, target or model)."""
    entry = route(services, source, target, model, None)
    return ANY_MODEL if model is None else entry.name


def _sentence(services: Services, text: str, field: str) -> str:
    check_texts([text], services.settings, field)
    sentences, _ = split_sentences(text)
    if len(sentences) > 1:
        raise ApiError(
            422, field, f"one sentence per entry, got {len(sentences)}: the memory matches sentences"
        )
    return sentences[0]


async def _writer(request: Request, services: Services) -> None:
    key = await authorize(request, services)
    if not services.access.may_write_memory(key):
        raise ApiError(403, "Authorization", "this key may not write the translation memory", "forbidden")


def _memory(services: Services):
    if services.memory is None:
        raise ApiError(503, None, "the translation memory is not configured", "unavailable")
    return services.memory


def _unavailable(error: MemoryUnavailable) -> ApiError:
    return ApiError(503, None, str(error), "unavailable", {"Retry-After": "5"})


@router.put(
    "/v1/memory",
    response_model=MemoryOut,
    openapi_extra=_PUT_BODY,
    summary="Approve a translation of a sentence: returned for it from then on",
    description="Needs a memory key (NMT_MEMORY_KEYS) when API keys are set. Replaces an earlier entry.",
)
async def put_memory(request: Request) -> MemoryOut:
    services = await get_services(request)
    await _writer(request, services)
    require_json(request)
    body = parse_json(MemoryEntry, await request.body())
    family = _family(services, body.source, body.target, body.model)
    text = _sentence(services, body.text, "text")
    check_texts([body.translation], services.settings, "translation")
    translation = body.translation.strip()
    try:
        await _memory(services).put(family, body.source, body.target, text, translation)
    except MemoryUnavailable as error:
        raise _unavailable(error) from None
    return MemoryOut(
        source=body.source, target=body.target, model=body.model, text=text, translation=translation
    )


_QUERY = {
    "parameters": [
        {"name": "source", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "target", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "text", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
    ]
}


class Deleted(BaseModel):
    deleted: bool


def _query(request: Request) -> tuple[str, str, str, str | None]:
    params = request.query_params
    for name in ("source", "target", "text"):
        if not params.get(name):
            raise ApiError(422, name, "required (a query parameter)")
    return params["source"], params["target"], params["text"], params.get("model") or None


@router.get(
    "/v1/memory",
    response_model=MemoryOut,
    openapi_extra=_QUERY,
    summary="The approved translation of a sentence",
)
async def get_memory(request: Request) -> MemoryOut:
    services = await get_services(request)
    await authorize(request, services)
    source, target, text, model = _query(request)
    family = _family(services, source, target, model)
    sentence = _sentence(services, text, "text")
    try:
        found = await _memory(services).get(family, source, target, sentence)
    except MemoryUnavailable as error:
        raise _unavailable(error) from None
    if found is None:
        raise ApiError(404, "text", "no approved translation of this sentence", "not_found")
    return MemoryOut(source=source, target=target, model=model, text=sentence, translation=found)


@router.delete(
    "/v1/memory",
    response_model=Deleted,
    openapi_extra=_QUERY,
    summary="Forget the approved translation of a sentence",
    description="The same query as GET; needs a memory key when API keys are set.",
)
async def delete_memory(request: Request) -> Deleted:
    services = await get_services(request)
    await _writer(request, services)
    source, target, text, model = _query(request)
    family = _family(services, source, target, model)
    sentence = _sentence(services, text, "text")
    try:
        deleted = await _memory(services).delete(family, source, target, sentence)
    except MemoryUnavailable as error:
        raise _unavailable(error) from None
    if not deleted:
        raise ApiError(404, "text", "no approved translation of this sentence", "not_found")
    return Deleted(deleted=True)
