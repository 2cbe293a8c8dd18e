"""LibreTranslate's language detection: POST /detect (JSON or form: q, api_key) ->
`[{"language": "en", "confidence": 97.0}, ...]`, the languages served, most likely first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from serving.deps import authorize, get_services
from serving.errors import ApiError, validation_error
from serving.routers.libretranslate import _fields
from serving.translation import check_texts

router = APIRouter(tags=["LibreTranslate compatible"])


class DetectRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # as /translate: its clients send more fields

    q: StrictStr = Field(description="the text whose language to detect")
    api_key: StrictStr | None = Field(None, max_length=1024)


class DetectedLanguage(BaseModel):
    language: str = Field(examples=["en"])
    confidence: float = Field(ge=0, le=100, description="a percentage", examples=[97.0])


_SCHEMA = DetectRequest.model_json_schema()
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": _SCHEMA}
            for media in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")
        },
    }
}


@router.post(
    "/detect",
    summary="LibreTranslate: detect the language of q (among the languages served)",
    response_model=list[DetectedLanguage],
    openapi_extra=_BODY,
)
async def detect(request: Request) -> list[dict[str, str | float]]:
    services = await get_services(request)
    fields = await _fields(request)
    await authorize(request, services, fields.get("api_key"))
    try:
        body = DetectRequest.model_validate(fields)
    except ValidationError as error:
        invalid = validation_error(error.errors())
        raise ApiError(400, invalid.field, invalid.message) from None  # LibreTranslate's status
    try:
        check_texts([body.q], services.settings, "q")
    except ApiError as error:
        raise ApiError(400, error.field, error.message) from None
    assert services.detector is not None  # made in the lifespan
    return [detection.as_json() for detection in services.detector.detect(body.q)]
