"""Plain ASGI middlewares (cheaper than Starlette's BaseHTTPMiddleware on every request): a
request body size limit; request counts and latencies for Prometheus; CORS for browser requests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence

from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import LIBRETRANSLATE_PATHS, expected_error_response
from serving.metrics import Metrics


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on to the JSON error handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await self._refuse(scope, send)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"request body larger than {self.max_bytes} bytes"
        await send(_response_start(413, scope["path"]))
        await send(_response_body(413, scope["path"], message, "too_large", "body"))


def _error_body(path: str, message: str, type: str, field: str | None) -> bytes:
    """An error in the endpoint's shape (see serving.errors), for answers sent below FastAPI."""
    if path in LIBRETRANSLATE_PATHS:
        return json.dumps({"error": f"{field}: {message}" if field else message}).encode()
    return json.dumps({"error": {"type": type, "field": field, "message": message}}).encode()


def _response_start(status: int, path: str, headers: dict[str, str] | None = None) -> Message:
    fields = [(b"content-type", b"application/json"), (b"connection", b"close")]
    fields += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http.response.start", "status": status, "headers": fields}


def _response_body(
    status: int, path: str, message: str, type: str = "unavailable", field: str | None = None
) -> Message:
    return {"type": "http.response.body", "body": _error_body(path, message, type, field)}


class RequestMetrics:
    """Counts and times every HTTP request by endpoint (known paths only, else "other") and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, endpoints: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints
        self._children: dict[tuple[str, int], tuple] = {}  # labels() takes a lock: look each pair up once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in self.endpoints else "other"
        status = {"code": 0}
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if status["code"] >= 500:  # the client should not reuse this connection
                    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except asyncio.CancelledError:
            # the server's drain time ran out (SIGTERM): a 503 the client can retry elsewhere,
            # rather than uvicorn's bare 500
            if not status["code"]:
                await recording_send(_response_start(503, scope["path"], {"Retry-After": "1"}))
                await recording_send(_response_body(503, scope["path"], "the service is shutting down"))
            raise
        finally:
            key = (endpoint, status["code"] or 500)
            children = self._children.get(key)
            if children is None:
                children = (
                    self.metrics.latency.labels(endpoint),
                    self.metrics.requests.labels(endpoint, str(key[1])),
                )
                self._children[key] = children
            children[0].observe(time.perf_counter() - started)
            children[1].inc()


class BrowserCors:
    """Starlette's CORSMiddleware, for requests that carry an `Origin` header (browsers) only.

    Starlette wraps every response of every request to add `Vary: Origin`; API clients send no
    Origin and get nothing from it, yet paid for it on each cache hit (a tenth of its time)."""

    def __init__(
        self,
        app: ASGIApp,
        allow_origins: Sequence[str],
        allow_methods: Sequence[str],
        allow_headers: Sequence[str],
        expose_headers: Sequence[str],
        max_age: int,
    ) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=allow_origins,
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            expose_headers=expose_headers,
            max_age=max_age,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(name == b"origin" for name, _ in scope["headers"]):
            return await self.cors(scope, receive, send)
        return await self.app(scope, receive, send)


Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """The hot POST endpoints (`/v1/translate`, LibreTranslate's `/translate`), called straight
    from here instead of through FastAPI's router.

    They parse their own bodies and take no dependencies, so the router's work for them (route
    matching, two exit stacks, exception wrappers) bought nothing, yet it was a third of a cache
    hit's time. They stay declared as FastAPI routes (OpenAPI, /docs, other methods' 405); the
    middlewares around this one (metrics, CORS, body limit) and the server-error handler above it
    apply as before, and their errors get the same answers as everywhere (serving.errors)."""

    def __init__(self, app: ASGIApp, endpoints: dict[str, Endpoint]) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoints.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as error:
            answer = expected_error_response(request, error)
            if answer is None:
                raise  # a bug: ServerErrorMiddleware logs it and answers 500
            response = answer
        await response(scope, receive, send)
