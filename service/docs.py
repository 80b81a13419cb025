"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc`, with every script, style
sheet and icon served by the service itself.

FastAPI's own pages load them from a CDN (and ReDoc its fonts from Google), so on a network
without internet, as bank networks often are, they stay blank. The assets come from the
installed `fastapi-offline` package (MIT; it ships Swagger UI, Apache-2.0, and ReDoc, MIT);
only its files are used, the app is built as usual.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
# The browser itself refuses anything from elsewhere: ReDoc's sidebar, for one, always shows a
# logo from its vendor's CDN. Both pages start with an inline script and use inline styles.
POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'none'"
)


def _page(html: HTMLResponse) -> HTMLResponse:
    html.headers["Content-Security-Policy"] = POLICY
    return html


def _assets() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Serve the documentation pages on `app`, built with `docs_url=None, redoc_url=None`."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise RuntimeError("FastAPI's own /docs or /redoc (CDN assets) is on: turn them off")
    app.mount(ASSETS_URL, StaticFiles(directory=_assets()), name="docs-assets")
    openapi_url = str(app.openapi_url)
    favicon = f"{ASSETS_URL}/favicon.png"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _page(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=favicon,
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _page(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=favicon,
                with_google_fonts=False,
            )
        )
