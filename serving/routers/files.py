"""LibreTranslate's file endpoints: POST /translate_file (a multipart form: file, source, target,
api_key) answers `{"translatedFileUrl": ".../download_file/<id>"}`; GET /download_file/<id>
sends the translated file as an attachment until NMT_FILE_TTL_S has passed.

Limits: a file over NMT_MAX_FILE_BYTES is a 413 (over NMT_MAX_BODY_BYTES the whole body is refused
before it is read), its text over NMT_MAX_CHARS a 400, a type other than .txt, .html, .srt and
.docx a 415, each naming `file`. Ids are 128 random bits (then the file's name, as LibreTranslate
has it): a file is found by its id only, and no id reaches the file system.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from serving.deps import authorize, get_services, request_caller
from serving.errors import ApiError
from serving.files import MEDIA_TYPES, FileError, suffix, text_chars, translate_file
from serving.routers.translate import route
from serving.schemas import TranslateFileResponse
from serving.translation import run_pipeline, search_options

router = APIRouter(tags=["LibreTranslate compatible"])

_ID = re.compile(r"^[0-9a-f]{32}(\.[\w\-. ]{1,200})?$")
_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "source", "target"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "source": {"type": "string"},
                        "target": {"type": "string"},
                        "api_key": {"type": "string"},
                    },
                }
            }
        },
    }
}


def _safe_name(filename: str) -> str:
    name = re.sub(r"[^\w\-. ]", "_", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip(". ")
    return name[-200:] or "file"


@router.post(
    "/translate_file",
    response_model=TranslateFileResponse,
    openapi_extra=_FORM,
    summary="LibreTranslate: translate a .txt, .html, .srt or .docx file",
)
async def translate_file_endpoint(request: Request) -> TranslateFileResponse:
    services = await get_services(request)
    settings = services.settings
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ApiError(415, "Content-Type", "must be multipart/form-data", "unsupported_media_type")
    try:
        form = await request.form(max_part_size=settings.max_file_bytes)
    except MultiPartException as error:
        raise ApiError(400, "body", f"malformed form ({error.message})") from None
    fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    key = await authorize(request, services, fields.get("api_key"))
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "file", "required (a file field of the form)")
    for name in ("source", "target"):
        if not fields.get(name):
            raise ApiError(400, name, "required")
    filename = _safe_name(upload.filename or "")
    if suffix(filename) not in MEDIA_TYPES:
        raise ApiError(
            415,
            "file",
            f"unsupported type {suffix(filename) or '(none)'}; send .txt, .html, .srt or .docx",
            "unsupported_media_type",
        )
    data = await upload.read(settings.max_file_bytes + 1)
    if len(data) > settings.max_file_bytes:
        raise ApiError(413, "file", f"larger than {settings.max_file_bytes} bytes", "too_large")
    if not data.strip():
        raise ApiError(400, "file", "is empty")
    try:
        chars = text_chars(filename, data)
    except FileError as error:
        raise ApiError(400, "file", str(error)) from None
    if chars > settings.max_chars:
        raise ApiError(400, "file", f"at most {settings.max_chars} characters of text, got {chars}")
    client_id = request.headers.get(settings.client_id_header)
    entry = route(services, fields["source"], fields["target"], fields.get("model"), client_id)
    search = search_options(entry, settings)
    caller = request_caller(request, services, key, False)

    async def translate(texts: list[str], format: str) -> list[str]:
        results, _ = await run_pipeline(services, entry, texts, search, "file", caller, False, format)
        return [r.text for r in results]

    try:
        translated = await translate_file(filename, data, translate)
    except FileError as error:
        raise ApiError(400, "file", str(error)) from None
    except ApiError as error:
        if error.status == 422:
            raise ApiError(400, "file", error.message, error.type) from None
        raise
    id = f"{secrets.token_hex(16)}.{filename}"
    record = {"name": filename, "data": base64.b64encode(translated).decode()}
    assert services.files is not None
    await services.files.set(id, orjson.dumps(record).decode(), settings.file_ttl_s)
    return TranslateFileResponse(translatedFileUrl=str(request.url_for("download_file", id=id)))


@router.get(
    "/download_file/{id}",
    name="download_file",
    response_class=Response,
    openapi_extra={  # documented, not enforced by FastAPI: a malformed id is a 404 like any unknown one
        "parameters": [
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": _ID.pattern},
            }
        ]
    },
    responses={
        200: {"description": "the translated file", "content": {t: {} for t in set(MEDIA_TYPES.values())}}
    },
    summary="LibreTranslate: a translated file",
)
async def download_file(request: Request) -> Response:
    services = await get_services(request)
    id = request.path_params["id"]
    raw = await services.files.get(id) if _ID.match(id) and services.files else None
    if raw is None:
        raise ApiError(404, "id", "no such file (or it has expired)", "not_found")
    record = orjson.loads(raw)
    name = record["name"]
    return Response(
        base64.b64decode(record["data"]),
        media_type=MEDIA_TYPES[suffix(name)],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
