"""What the endpoints need from a request: the app's services, the caller's API key and identity,
a way to notice the client leaving, and bodies parsed into their schemas.

Headers are read from `request.headers` directly: FastAPI's `Header()` parameters cost tens of
microseconds each, a visible share of a cache hit's time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from serving.access import fingerprint
from serving.errors import ApiError, validation_error
from serving.services import Services
from serving.translation import Caller

Model = TypeVar("Model", bound=BaseModel)


async def get_services(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise ApiError(503, None, "the service is starting; models are not loaded yet", "not_ready")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def api_key(request: Request, body_key: object = None) -> str | None:
    """The key from `Authorization: Bearer KEY`, else `?api_key=`, else the body's `api_key`."""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    query = request.query_params.get("api_key")
    if query:
        return query
    return body_key if isinstance(body_key, str) and body_key else None


def client_address(request: Request) -> str:
    """The client's address (uvicorn takes it from X-Forwarded-For only from trusted proxies)."""
    return request.client.host if request.client else "unknown"


async def authorize(
    request: Request, services: Services, body_key: object = None, metrics: bool = False
) -> str | None:
    """Raise 401/429 unless the request may go on; the key's fingerprint if it gave one."""
    if not services.access.enabled and not (metrics and services.access.metrics_token):
        return None
    return await services.access.check(api_key(request, body_key), client_address(request), metrics)


async def authorized_services(request: Request) -> Services:
    services = await get_services(request)
    await authorize(request, services)
    return services


AuthorizedServices = Annotated[Services, Depends(authorized_services)]


def owner(request: Request, services: Services, key: str | None) -> str:
    """Who may post references for what this request gets: its API key if it used one, else its
    client id header, else its address."""
    if key:
        return f"key:{key}"
    client_id = request.headers.get(services.settings.client_id_header)
    if client_id:
        return f"client:{fingerprint(client_id)}"
    return f"address:{fingerprint(client_address(request))}"


def until_gone(request: Request) -> Callable[[], Awaitable[object]]:
    """An awaitable factory that completes once the client has closed the connection (call it
    after the body has been read: the server then only answers `http.disconnect`)."""

    async def wait() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return wait


def request_caller(request: Request, services: Services, key: str | None, pinned: bool) -> Caller:
    """Who asks for this whole request: its owner, its disconnect, and its deadline
    (NMT_REQUEST_TIMEOUT_S from now, for every decode it makes)."""
    deadline = time.monotonic() + services.settings.request_timeout_s
    return Caller(owner(request, services, key), pinned, until_gone(request), deadline)


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "Content-Type", "must be application/json", "unsupported_media_type")


def parse_json(model: type[Model], raw: bytes) -> Model:
    """The body as `model`, or the error naming the field (malformed JSON: 400, invalid: 422)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise validation_error(error.errors()) from None
