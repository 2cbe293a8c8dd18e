"""The OpenAPI document, completed: every error an endpoint answers with its JSON shape, the
Bearer scheme (and `api_key` in the query string), bodies the endpoints parse themselves.

FastAPI documents what it validates; the endpoints here parse their own bodies (cheaper, and
errors that name the field) and raise `ApiError`, so this module adds what FastAPI cannot see.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serving.schemas import ErrorResponse, LibreTranslateError
from serving.settings import Settings

_MEANING = {
    400: "malformed request (bad JSON or form, unknown language pair)",
    401: "missing or invalid API key (only when NMT_API_KEYS is set)",
    403: "the translation belongs to another client, or the key may not write the translation memory",
    404: "unknown or expired id, or no such translation memory entry",
    413: "request body, or a sentence, too large",
    415: "unsupported Content-Type",
    422: "a field is invalid; `field` names it",
    429: "rate limit, or too many failed authentications from this address; see Retry-After",
    503: "starting, shutting down, overloaded (queue full) or store unavailable; see Retry-After",
    504: "not translated within NMT_REQUEST_TIMEOUT_S",
}

# (method, path) -> the error statuses it answers; protected: it takes an API key when keys are set
_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/v1/translate"): (400, 401, 413, 415, 422, 429, 503, 504),
    ("post", "/translate"): (400, 401, 413, 415, 429, 503, 504),
    ("get", "/languages"): (503,),
    ("post", "/v1/feedback"): (400, 401, 403, 404, 413, 415, 422, 429, 503),
    ("get", "/v1/ab/report"): (401, 429, 503),
    ("get", "/v1/models"): (503,),
    ("get", "/metrics"): (401, 429, 503),
    ("put", "/v1/glossary"): (400, 401, 413, 415, 422, 429, 503),
    ("get", "/v1/glossary"): (401, 429, 503),
    ("delete", "/v1/glossary"): (401, 429, 503),
    ("post", "/translate_file"): (400, 401, 413, 415, 429, 503, 504),
    ("get", "/download_file/{id}"): (404, 503),
    ("post", "/detect"): (400, 401, 413, 415, 429, 503),
    ("get", "/frontend/settings"): (503,),
    ("post", "/v1/translate/stream"): (400, 401, 413, 415, 422, 429, 503),
    ("put", "/v1/memory"): (400, 401, 403, 413, 415, 422, 429, 503),
    ("get", "/v1/memory"): (400, 401, 404, 422, 429, 503),
    ("delete", "/v1/memory"): (400, 401, 403, 404, 422, 429, 503),
}
_PROTECTED = {
    "/v1/translate",
    "/translate",
    "/v1/feedback",
    "/v1/ab/report",
    "/metrics",
    "/v1/glossary",
    "/translate_file",
    "/detect",
    "/v1/translate/stream",
    "/v1/memory",
}
_LIBRETRANSLATE = {
    "/translate",
    "/languages",
    "/translate_file",
    "/download_file/{id}",
    "/detect",
    "/frontend/settings",
}


def document(app: FastAPI, settings: Settings) -> None:
    """Make `app.openapi()` return the completed document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _complete(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (ErrorResponse, LibreTranslateError):
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(definition.pop("$defs", {}))
        schemas[model.__name__] = definition
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, never answered
        schemas.pop(unused, None)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "an NMT_API_KEYS key"},
        "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
    }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            shape = LibreTranslateError if path in _LIBRETRANSLATE else ErrorResponse
            for status in _ERRORS.get((method, path), ()):
                responses[str(status)] = {
                    "description": _MEANING[status],
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{shape.__name__}"}}
                    },
                }
            if path in _PROTECTED:
                # no key is needed when the service runs without NMT_API_KEYS (the empty entry)
                operation["security"] = [{"bearer": []}, {"apiKeyQuery": []}, {}]
