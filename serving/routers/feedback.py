"""Online A/B evaluation: POST /v1/feedback (a reference for a translation id), GET /v1/ab/report."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from serving.ab import StoreUnavailable, build_report
from serving.deps import AuthorizedServices, JsonServices
from serving.errors import ApiError
from serving.schemas import FeedbackRequest, FeedbackResponse

router = APIRouter(tags=["A/B testing"])


@router.post(
    "/v1/feedback",
    response_model=FeedbackResponse,
    summary="Post a reference translation for a translation id",
)
async def feedback(body: FeedbackRequest, services: JsonServices) -> FeedbackResponse:
    try:
        served = await services.ab_store.lookup(body.id)
        if served is None:
            raise ApiError(404, "id", "unknown or expired translation id", "not_found")
        await services.ab_store.add_reference(served, body.reference.strip())
    except StoreUnavailable as error:
        raise ApiError(503, None, str(error), "unavailable", {"Retry-After": "5"}) from None
    return FeedbackResponse(id=served.id, model=served.variant, variant=served.variant, accepted=True)


@router.get("/v1/ab/report", summary="Per-variant requests, latency, BLEU and chrF")
async def report(services: AuthorizedServices) -> dict[str, Any]:
    try:
        snapshot = await services.ab_store.snapshot()
    except StoreUnavailable as error:
        raise ApiError(503, None, str(error), "unavailable", {"Retry-After": "5"}) from None
    return {
        "split": services.registry.ab_split,
        "pairs": await asyncio.to_thread(build_report, snapshot),  # bootstrap resampling takes a moment
    }
