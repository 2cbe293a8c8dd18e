"""The caller's stored glossary: PUT, GET and DELETE /v1/glossary, keyed by the caller (its API
key when keys are set, else its X-Client-Id, else its address: `deps.owner`). Stored in Redis
without expiry when the service has Redis, else in this process. Applied to every /v1/translate
and /translate request of that caller, under the request's own `glossary` (see serving/terms.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from serving.deps import authorize, get_services, owner, parse_json, require_json
from serving.schemas import GlossaryBody
from serving.terms import Glossaries, check_glossary

router = APIRouter(tags=["glossary"])


_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": GlossaryBody.model_json_schema()}},
    }
}


@router.put(
    "/v1/glossary",
    response_model=GlossaryBody,
    openapi_extra=_BODY,
    summary="Store the caller's glossary (replacing it)",
)
async def put_glossary(request: Request) -> GlossaryBody:
    services = await get_services(request)
    key = await authorize(request, services)
    require_json(request)
    body = parse_json(GlossaryBody, await request.body())
    check_glossary(body.glossary, services.settings)
    await Glossaries(services).put(owner(request, services, key), body.glossary)
    return body


@router.get("/v1/glossary", response_model=GlossaryBody, summary="The caller's stored glossary")
async def get_glossary(request: Request) -> GlossaryBody:
    services = await get_services(request)
    key = await authorize(request, services)
    return GlossaryBody(glossary=await Glossaries(services).get(owner(request, services, key)))


@router.delete("/v1/glossary", status_code=204, summary="Delete the caller's stored glossary")
async def delete_glossary(request: Request) -> Response:
    services = await get_services(request)
    key = await authorize(request, services)
    await Glossaries(services).delete(owner(request, services, key))
    return Response(status_code=204)
