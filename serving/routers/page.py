"""What a person meets in a browser: the translation page at `/` (plain HTML, CSS and one small
script from serving/static/, no external URL), `/docs` (Swagger UI) and `/redoc` with their assets
served from the `fastapi-offline` package rather than a CDN, so all of it works offline, and
LibreTranslate's `GET /frontend/settings`, which the page reads to set itself up.

Why fastapi-offline: its wheel carries Swagger UI's bundle and stylesheet and ReDoc's standalone
script (2.8 MB) and nothing else we load; only those files are used here, FastAPI's own
`get_swagger_ui_html` / `get_redoc_html` write the pages.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from serving.deps import ServicesDep
from serving.files import MEDIA_TYPES
from serving.routers.libretranslate import LANGUAGE_NAMES

STATIC = Path(__file__).resolve().parent.parent / "static"
DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
FRONTEND_TIMEOUT_MS = 500  # the page's translate-as-you-type pause, LibreTranslate's default

router = APIRouter()


class LanguageName(BaseModel):
    code: str
    name: str


class FrontendLanguages(BaseModel):
    source: LanguageName
    target: LanguageName


class FrontendSettings(BaseModel):
    charLimit: int = Field(description="characters in one text")
    frontendTimeout: int = Field(description="ms the page waits after typing before it translates")
    apiKeys: bool = Field(description="whether the service has API keys")
    keyRequired: bool = Field(description="whether every request needs one")
    suggestions: bool = Field(description="whether suggested translations are taken (PUT /v1/memory)")
    filesTranslation: bool = Field(description="whether POST /translate_file is served")
    supportedFilesFormat: list[str]
    language: FrontendLanguages


def install(app: FastAPI) -> None:
    """Serve the page, its assets and the offline docs (create the app with docs_url=None and
    redoc_url=None: these replace FastAPI's CDN-backed ones)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")


# ReDoc 2 puts Redocly's logo in its sidebar from Redocly's CDN, whatever its options say: the
# script is served with that one URL pointing at the local favicon instead
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@cache
def _redoc_script() -> bytes:
    script = (DOCS_ASSETS / "redoc.standalone.js").read_text(encoding="utf-8")
    return script.replace(REDOC_LOGO, "/docs-assets/favicon.png").encode()


@router.get("/docs-assets/redoc.standalone.js", include_in_schema=False)
async def redoc_script() -> Response:
    return Response(_redoc_script(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="nmt translation service - Swagger UI",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon.png",
    )


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title="nmt translation service - ReDoc",
        redoc_js_url="/docs-assets/redoc.standalone.js",
        redoc_favicon_url="/docs-assets/favicon.png",
        with_google_fonts=False,
    )


@router.get(
    "/frontend/settings",
    response_model=FrontendSettings,
    tags=["LibreTranslate compatible"],
    summary="LibreTranslate: what a front end needs to know (limits, keys, suggestions, files)",
)
async def frontend_settings(request: Request, services: ServicesDep) -> dict[str, Any]:
    settings = services.settings
    languages = services.registry.languages()
    target = next((tgts[0] for tgts in languages.values() if tgts), "en")
    # the features other endpoints bring are on when those endpoints are served
    paths = request.app.openapi()["paths"]  # (included routers are not in app.routes one by one)
    files = "post" in paths.get("/translate_file", {})
    return {
        "charLimit": settings.max_chars,
        "frontendTimeout": FRONTEND_TIMEOUT_MS,
        "apiKeys": bool(settings.api_keys),
        "keyRequired": bool(settings.api_keys),
        "suggestions": "put" in paths.get("/v1/memory", {}),
        "filesTranslation": files,
        "supportedFilesFormat": list(MEDIA_TYPES) if files else [],
        "language": {
            "source": {"code": "auto", "name": "Auto Detect"},
            "target": {"code": target, "name": LANGUAGE_NAMES.get(target, target)},
        },
    }
