"""Operations: GET /health (the process answers), /ready (models loaded), /metrics (Prometheus)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from serving.deps import authorize, get_services

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: every model is loaded", response_model=None)
async def ready(request: Request) -> JSONResponse | dict[str, Any]:
    services = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    redis = None
    if services.redis is not None:
        redis = (
            "up" if services.redis.available and await services.redis.ping() else "down (serving uncached)"
        )
    return {
        "status": "ready",
        "models": list(services.registry.entries),
        "cache": services.cache.kind,
        "redis": redis,
    }


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="With API keys or NMT_METRICS_TOKEN set, scrapers send `Authorization: Bearer TOKEN`.",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    await authorize(request, await get_services(request), metrics=True)
    registry = request.app.state.metrics.registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several workers: add up what each one wrote
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
