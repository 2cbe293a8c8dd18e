"""LibreTranslate-compatible endpoints, so its existing clients work unchanged:
POST /translate (JSON or form: q, source, target, format, alternatives, api_key) -> translatedText,
GET /languages. Errors come as `{"error": "..."}`, the shape LibreTranslate's clients read.

Unlike LibreTranslate, a list `q` is decoded as one batch (not text by text), and the cache key
carries the model version. `source: "auto"` detects the language (serving/detect.py) among
those served, and answers it as `detectedLanguage`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from pydantic_core import from_json
from starlette.formparsers import MultiPartException

from serving.deps import ServicesDep, authorize, get_services, request_caller
from serving.detect import auto_source
from serving.errors import ApiError, validation_error
from serving.routers.translate import route, variant_headers
from serving.schemas import LibreTranslateRequest, LibreTranslateResponse
from serving.services import Services
from serving.terms import request_terms
from serving.translation import check_texts, run_pipeline, search_options

router = APIRouter(tags=["LibreTranslate compatible"])

LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "cs": "Czech",
    "es": "Spanish",
    "it": "Italian",
    "nl": "Dutch",
    "pt": "Portuguese",
    "ru": "Russian",
    "zh": "Chinese",
}


async def _fields(request: Request) -> dict[str, Any]:
    """The request's fields from JSON, a urlencoded form or a multipart form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:  # pydantic's parser: no NaN/Infinity, a bounded nesting depth, no lone surrogates
            body = from_json(await request.body(), allow_inf_nan=False)
        except ValueError as error:
            raise ApiError(400, "body", f"malformed JSON ({error})") from None
        if not isinstance(body, dict):
            raise ApiError(400, "body", "must be a JSON object")
        return body
    if content_type == "application/x-www-form-urlencoded":
        raw = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values if key == "q" and len(values) > 1 else values[-1] for key, values in raw.items()}
    if content_type == "multipart/form-data":
        try:
            form = await request.form()
        except AssertionError:  # Starlette without python-multipart
            raise ApiError(415, "Content-Type", "multipart forms need python-multipart; send JSON") from None
        except MultiPartException as error:
            raise ApiError(400, "body", f"malformed form ({error.message})") from None
        return {key: value for key, value in form.items() if isinstance(value, str)}
    raise ApiError(415, "Content-Type", "must be application/json or a form", "unsupported_media_type")


def _parse(fields: dict[str, Any]) -> LibreTranslateRequest:
    try:
        return LibreTranslateRequest.model_validate(fields)
    except ValidationError as error:
        raise validation_error(error.errors()) from None


_FORM_SCHEMA = LibreTranslateRequest.model_json_schema()
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _FORM_SCHEMA},
            "application/x-www-form-urlencoded": {"schema": _FORM_SCHEMA},
            "multipart/form-data": {"schema": _FORM_SCHEMA},
        },
    }
}


@router.post(
    "/translate",
    summary="LibreTranslate: translate q from source to target",
    response_model=LibreTranslateResponse,
    response_model_exclude_none=True,
    openapi_extra=_BODY,
)
async def translate(request: Request) -> JSONResponse:
    services = await get_services(request)
    try:
        return await _translate(request, services)
    except ApiError as error:
        if error.status != 422:
            raise
        # LibreTranslate answers every invalid field with 400, and its clients look for that
        raise ApiError(400, error.field, error.message, error.type, error.headers) from None


async def _translate(request: Request, services: Services) -> JSONResponse:
    fields = await _fields(request)
    key = await authorize(request, services, fields.get("api_key"))
    body = _parse(fields)
    texts = [body.q] if isinstance(body.q, str) else body.q
    check_texts(texts, services.settings, "q")
    target = body.target
    detected = auto_source(services, body.source, target, texts)
    source = detected.language if detected else body.source
    client_id = request.headers.get(services.settings.client_id_header)
    entry = route(services, source, target, body.model, client_id)
    n_best = body.alternatives + 1
    if n_best > services.settings.max_beam_size:
        raise ApiError(400, "alternatives", f"at most {services.settings.max_beam_size - 1}")
    search = search_options(
        entry, services.settings, beam_size=max(entry.bundle.search.beam_size, n_best), n_best=n_best
    )
    caller = request_caller(request, services, key, body.model is not None)
    glossary, _ = await request_terms(services, caller.owner, None, None)
    results, _ = await run_pipeline(services, entry, texts, search, "q", caller, False, body.format, glossary)
    response: dict[str, Any]
    if isinstance(body.q, str):
        response = {"translatedText": results[0].text}
        if body.alternatives:
            response["alternatives"] = [text for text, _ in results[0].alternatives[1:]]
    else:
        response = {"translatedText": [r.text for r in results]}
        if body.alternatives:
            response["alternatives"] = [[text for text, _ in r.alternatives[1:]] for r in results]
    if detected:
        response["detectedLanguage"] = detected.as_json()
    return JSONResponse(response, headers=variant_headers(entry))


@router.get("/languages", summary="LibreTranslate: the languages served and their targets")
async def languages(services: ServicesDep) -> list[dict[str, Any]]:
    return [
        {"code": src, "name": LANGUAGE_NAMES.get(src, src), "targets": tgts}
        for src, tgts in services.registry.languages().items()
    ]
