"""Errors as JSON with a real status code and the field at fault, never a traceback.

Native endpoints answer `{"error": {"type", "field", "message"}}`; the LibreTranslate-compatible
ones answer `{"error": "message"}`, the shape its clients read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger("nmt.serving")

LIBRETRANSLATE_PATHS = ("/translate", "/languages", "/translate_file", "/detect", "/frontend/settings")


def libretranslate_path(path: str) -> bool:
    """Whether `path` is a LibreTranslate-compatible endpoint (its errors: {"error": "..."})."""
    return path in LIBRETRANSLATE_PATHS or path.startswith("/download_file/")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        field: str | None,
        message: str,
        type: str = "invalid_request",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.field, self.message, self.type = status, field, message, type
        self.headers = headers


def error_response(request: Request, error: ApiError) -> JSONResponse:
    body: dict[str, Any]
    if libretranslate_path(request.url.path):
        text = f"{error.field}: {error.message}" if error.field else error.message
        body = {"error": text}
    else:
        body = {"error": {"type": error.type, "field": error.field, "message": error.message}}
    headers = dict(error.headers or {})
    if error.status >= 500:  # the server is in trouble: the client should not reuse this connection
        headers["Connection"] = "close"
    return JSONResponse(body, status_code=error.status, headers=headers)


_UNION_TAGS = {"str", "int", "float", "bool", "none"}  # pydantic names the branch of a union in `loc`


def _location(location: tuple[Any, ...]) -> list[str]:
    return [
        str(part)
        for part in location
        if part not in ("body", "query", "header")
        and not (isinstance(part, str) and ("[" in part or part in _UNION_TAGS))
    ]


def _field(location: tuple[Any, ...]) -> str:
    """("body", "text", "list[str]", 3) -> "text.3"; the body itself -> "body"."""
    return ".".join(_location(location)) or "body"


def validation_error(errors: Sequence[Any]) -> ApiError:
    """The ApiError for pydantic's (or FastAPI's) list of validation errors."""
    # of a union's failed branches, the one that got deepest into the value says most
    first = max(errors, key=lambda e: len(_location(tuple(e.get("loc", ())))))
    if first.get("type") == "json_invalid":
        return ApiError(400, "body", f"malformed JSON ({first.get('ctx', {}).get('error', 'invalid')})")
    field = _field(tuple(first.get("loc", ())))
    message = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        message = "required"
    return ApiError(422, field, message)


def _from_http_exception(error: StarletteHTTPException) -> ApiError:
    kinds = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    return ApiError(
        error.status_code,
        "body" if error.status_code == 413 else None,
        str(error.detail),
        kinds.get(error.status_code, "http_error"),
        dict(error.headers or {}),
    )


def expected_error_response(request: Request, error: Exception) -> JSONResponse | None:
    """The answer to an exception that is no server bug, None for anything else."""
    if isinstance(error, ApiError):
        return error_response(request, error)
    if isinstance(error, RequestValidationError):
        return error_response(request, validation_error(error.errors()))
    if isinstance(error, StarletteHTTPException):
        return error_response(request, _from_http_exception(error))
    if isinstance(error, ClientDisconnect):
        # the client left while its body was read: nobody reads this answer, and it is no server error
        return error_response(request, ApiError(499, None, "the client closed the connection", "gone"))
    return None


def install(app: FastAPI) -> None:
    async def on_expected(request: Request, error: Exception) -> JSONResponse:
        response = expected_error_response(request, error)
        assert response is not None
        return response

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, ApiError(500, None, "internal error; see the service log", "internal"))

    for kind in (ApiError, RequestValidationError, StarletteHTTPException, ClientDisconnect):
        app.add_exception_handler(kind, on_expected)
    app.add_exception_handler(Exception, on_unexpected)
