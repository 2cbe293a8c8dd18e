"""Dependencies the routers declare: the app's services, access checks, a JSON content type."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from serving.errors import ApiError
from serving.services import Services


def get_services(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise ApiError(503, None, "the service is starting; models are not loaded yet", "not_ready")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def json_content(content_type: Annotated[str | None, Header()] = None) -> None:
    if not content_type or content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "Content-Type", "must be application/json", "unsupported_media_type")


def authorized(services: ServicesDep, authorization: Annotated[str | None, Header()] = None) -> None:
    services.access.check(authorization)


JsonBody = Depends(json_content)
Authorized = Depends(authorized)
