"""Request and response bodies of the native API (`/v1/...`); see serving/routers/libretranslate.py
for the LibreTranslate-compatible shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StrictStr | list[StrictStr] = Field(description="one text, or a list of texts")
    source: StrictStr = Field(
        min_length=2, max_length=16, examples=["en"], description='a language code, or "auto" to detect it'
    )
    target: StrictStr = Field(min_length=2, max_length=16, examples=["de"])
    model: StrictStr | None = Field(
        None,
        max_length=256,
        description="a model name or version; default: A/B split or the pair's default "
        "(a request that names its model is reported outside the A/B split)",
    )
    # checked by SearchConfig.with_overrides (and the service's caps), not here: one set of limits
    beam_size: int | None = None
    n_best: int | None = None
    max_length: int | None = Field(None, description="most target tokens per sentence")
    length_penalty: float | None = Field(None, le=10.0)
    return_alignment: StrictBool = Field(
        False,
        description="add each translation's word alignment (models with attention only; 422 for others)",
    )
    format: Literal["text", "html"] = Field(
        "text", description="html: text nodes are translated and the markup kept (serving/markup.py)"
    )
    glossary: dict[StrictStr, StrictStr] | None = Field(
        None,
        description="source term -> target term, enforced in the output (merged over the caller's "
        "stored glossary, PUT /v1/glossary; this one wins for a term in both)",
        examples=[{"concert": "Konzert"}],
    )
    do_not_translate: list[StrictStr] | None = Field(
        None, description="spans copied verbatim (numbers, URLs and e-mail addresses always are)"
    )


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
    alignment: list[tuple[int, int]] | None = Field(
        None,
        description="with return_alignment: [source word, target word] links, words being the texts "
        "split at whitespace, each target word linked to the source word it attended to most",
        examples=[[[0, 0], [1, 1], [2, 2]]],
    )
    detected_language: dict[str, Any] | None = Field(
        None,
        description='with source "auto": the language detected, {"language": "en", "confidence": 0..100}',
    )
    confidence: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="how likely the translation is good, from the model's scores through the bundle's "
        "calibration (nmt calibrate); a text of several sentences: its least confident sentence's",
    )
    low_confidence: bool = Field(
        False, description="some sentence's confidence is under the model's threshold: check it"
    )
    origin: Literal["model", "memory"] = Field(
        "model", description="memory: every sentence came from the translation memory (PUT /v1/memory)"
    )


class TranslateResponse(BaseModel):
    translations: list[TranslationOut]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr = Field(min_length=1, max_length=64)
    reference: StrictStr = Field(
        min_length=1, description="a reference translation (at most NMT_MAX_REFERENCE_CHARS characters)"
    )


class LibreTranslateRequest(BaseModel):
    """LibreTranslate's /translate fields, as JSON or as a form (where every value is a string)."""

    model_config = ConfigDict(extra="ignore")  # its clients send fields of newer versions too

    q: StrictStr | list[StrictStr] = Field(description="a text, or a list of texts")
    source: StrictStr = Field(min_length=1, max_length=16, description="a language code, or 'auto'")
    target: StrictStr = Field(min_length=1, max_length=16)
    format: Literal["text", "html"] = Field(
        "text", description="html: text nodes are translated and the markup kept"
    )
    alternatives: int = Field(0, ge=0, le=63, description="alternative translations to return")
    api_key: StrictStr | None = Field(None, max_length=1024)
    model: StrictStr | None = Field(None, max_length=256, description="nmt extension: pin a model")


class LibreTranslateResponse(BaseModel):
    translatedText: str | list[str]
    alternatives: list[str] | list[list[str]] | None = None
    detectedLanguage: dict[str, Any] | None = None


class ErrorDetail(BaseModel):
    type: str = Field(description="e.g. invalid_request, unauthorized, rate_limited, overloaded, timeout")
    field: str | None = Field(description="the field at fault, dotted (text.3), or null")
    message: str


class ErrorResponse(BaseModel):
    """The native API's errors."""

    error: ErrorDetail


class LibreTranslateError(BaseModel):
    """The LibreTranslate-compatible endpoints' errors, the shape its clients read."""

    error: str


class FeedbackResponse(BaseModel):
    id: str
    model: str
    variant: str
    accepted: bool


class ModelsResponse(BaseModel):
    models: list[dict[str, Any]]
    defaults: dict[str, str]
    ab_split: dict[str, dict[str, float]]
    memory: dict[str, Any] | None = Field(
        None,
        description="the translation memory: `store` (redis or memory) and whether writes "
        "(PUT /v1/memory) need a memory key (`writes_need_key`)",
    )


class GlossaryBody(BaseModel):
    """PUT /v1/glossary's body and GET's answer: the caller's stored glossary."""

    model_config = ConfigDict(extra="forbid")

    glossary: dict[StrictStr, StrictStr] = Field(examples=[{"concert": "Konzert"}])


class TranslateFileResponse(BaseModel):
    translatedFileUrl: str
