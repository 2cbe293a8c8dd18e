"""Online A/B evaluation: POST /v1/feedback (a reference for a translation id), GET /v1/ab/report."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from serving.ab import StoreUnavailable, build_report
from serving.deps import AuthorizedServices, authorize, get_services, owner, parse_json, require_json
from serving.errors import ApiError
from serving.schemas import FeedbackRequest, FeedbackResponse

router = APIRouter(tags=["A/B testing"])

_FEEDBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": FeedbackRequest.model_json_schema()}},
    }
}


@router.post(
    "/v1/feedback",
    response_model=FeedbackResponse,
    summary="Post a reference translation for a translation id",
    description="Only the client that received the translation may post its reference: the same API "
    "key, else the same client id header, else the same address. A second reference replaces the first.",
    openapi_extra=_FEEDBACK_BODY,
)
async def feedback(request: Request) -> FeedbackResponse:
    services = await get_services(request)
    key = await authorize(request, services)
    require_json(request)
    body = parse_json(FeedbackRequest, await request.body())  # pydantic's parser: bounded nesting
    reference = body.reference.strip()
    if not reference:
        raise ApiError(422, "reference", "must not be empty")
    if len(reference) > services.settings.max_reference_chars:
        limit = services.settings.max_reference_chars
        raise ApiError(422, "reference", f"at most {limit} characters, got {len(reference)}")
    try:
        served = await services.ab_store.lookup(body.id)
        if served is None:
            raise ApiError(404, "id", "unknown or expired translation id", "not_found")
        if served.owner != owner(request, services, key):
            raise ApiError(403, "id", "this translation was served to another client", "forbidden")
        await services.ab_store.add_reference(served, reference)
    except StoreUnavailable as error:
        raise ApiError(503, None, str(error), "unavailable", {"Retry-After": "5"}) from None
    return FeedbackResponse(id=served.id, model=served.variant, variant=served.variant, accepted=True)


@router.get(
    "/v1/ab/report",
    summary="Per-variant requests, latency, BLEU and chrF",
    description="`pairs`: the variants of each language pair's split (and its default model); "
    "`pinned`: requests that named their model, kept out of the comparison.",
)
async def report(services: AuthorizedServices) -> dict[str, Any]:
    try:
        snapshot = await services.ab_store.snapshot()
    except StoreUnavailable as error:
        raise ApiError(503, None, str(error), "unavailable", {"Retry-After": "5"}) from None
    pairs, pinned = await asyncio.to_thread(  # bootstrap resampling takes a moment
        lambda: (build_report(snapshot["split"]), build_report(snapshot["pinned"]))
    )
    return {"split": services.registry.ab_split, "pairs": pairs, "pinned": pinned}
