"""LibreTranslate-compatible endpoints, so its existing clients work unchanged:
POST /translate (JSON or form: q, source, target, format, alternatives, api_key) -> translatedText,
GET /languages. Errors come as `{"error": "..."}`, the shape LibreTranslate's clients read.

Unlike LibreTranslate, a list `q` is decoded as one batch (not text by text), and the cache key
carries the model version. `source: "auto"` is accepted when exactly one source language
translates into the target (there is no language detection).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serving.deps import ServicesDep
from serving.errors import ApiError
from serving.routers.translate import route, run_translation, variant_headers
from serving.translation import check_texts, search_options

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
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "body", "malformed JSON") from None
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
        return {key: value for key, value in form.items() if isinstance(value, str)}
    raise ApiError(415, "Content-Type", "must be application/json or a form", "unsupported_media_type")


def _string(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None or value == "":
        raise ApiError(400, name, "required")
    if not isinstance(value, str):
        raise ApiError(400, name, "must be a string")
    return value


@router.post("/translate", summary="LibreTranslate: translate q from source to target")
async def translate(request: Request, services: ServicesDep) -> JSONResponse:
    fields = await _fields(request)
    api_key = fields.get("api_key")
    services.access.check(request.headers.get("authorization"), api_key if isinstance(api_key, str) else None)
    q = fields.get("q")
    if q is None or q == "" or q == []:
        raise ApiError(400, "q", "required")
    if not (isinstance(q, str) or (isinstance(q, list) and all(isinstance(item, str) for item in q))):
        raise ApiError(400, "q", "must be a string or a list of strings")
    texts = [q] if isinstance(q, str) else q
    check_texts(texts, services.settings, "q")
    if fields.get("format", "text") not in ("text", None):
        raise ApiError(400, "format", "only format 'text' is supported")
    try:
        alternatives = int(fields.get("alternatives") or 0)
    except (TypeError, ValueError):
        raise ApiError(400, "alternatives", "must be an integer") from None
    source, target = _string(fields, "source"), _string(fields, "target")
    detected = None
    if source == "auto":
        sources = [src for src, tgts in services.registry.languages().items() if target in tgts]
        if len(sources) != 1:
            raise ApiError(400, "source", "'auto' needs exactly one language that translates into the target")
        source = detected = sources[0]
    model = fields.get("model")
    client_id = request.headers.get(services.settings.client_id_header)
    entry = route(services, source, target, model if isinstance(model, str) else None, client_id)
    n_best = alternatives + 1
    beam = max(entry.bundle.search.beam_size, n_best)
    search = search_options(entry, services.settings, beam_size=beam, n_best=n_best)
    results, _ = await run_translation(services, entry, texts, search)
    body: dict[str, Any]
    if isinstance(q, str):
        body = {"translatedText": results[0].text}
        if alternatives:
            body["alternatives"] = [text for text, _ in results[0].alternatives[1:]]
    else:
        body = {"translatedText": [r.text for r in results]}
        if alternatives:
            body["alternatives"] = [[text for text, _ in r.alternatives[1:]] for r in results]
    if detected:
        body["detectedLanguage"] = {"language": detected, "confidence": 100.0}
    return JSONResponse(body, headers=variant_headers(entry))


@router.get("/languages", summary="LibreTranslate: the languages served and their targets")
async def languages(services: ServicesDep) -> list[dict[str, Any]]:
    return [
        {"code": src, "name": LANGUAGE_NAMES.get(src, src), "targets": tgts}
        for src, tgts in services.registry.languages().items()
    ]
