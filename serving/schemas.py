"""Request and response bodies of the native API (`/v1/...`); see serving/routers/libretranslate.py
for the LibreTranslate-compatible shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StrictStr | list[StrictStr] = Field(description="one text, or a list of texts")
    source: StrictStr = Field(min_length=2, max_length=16, examples=["en"])
    target: StrictStr = Field(min_length=2, max_length=16, examples=["de"])
    model: StrictStr | None = Field(
        None, description="a model name or version; default: A/B split or the pair's default"
    )
    beam_size: int | None = Field(None, ge=1)
    n_best: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=1, description="most target tokens per sentence")
    length_penalty: float | None = Field(None, ge=0.0, le=10.0)


class Alternative(BaseModel):
    text: str
    score: float | None


class TranslationOut(BaseModel):
    id: str = Field(description="pass it to POST /v1/feedback with a reference translation")
    text: str
    model: str
    variant: str
    version: str
    cached: bool = Field(description="every sentence of the text came from the cache")
    score: float | None = Field(
        description="length-normalised log-probability (mean over the text's sentences); null if empty"
    )
    alternatives: list[Alternative] | None = None


class TranslateResponse(BaseModel):
    translations: list[TranslationOut]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr = Field(min_length=1, max_length=64)
    reference: StrictStr = Field(min_length=1)


class FeedbackResponse(BaseModel):
    id: str
    model: str
    variant: str
    accepted: bool


class ModelsResponse(BaseModel):
    models: list[dict[str, Any]]
    defaults: dict[str, str]
    ab_split: dict[str, dict[str, float]]
