"""The console: a page for trying requests, watching batches and seeing the model's speed (``GET /``), and its
static files (``GET /console/<asset>``), from handler/entry/console/. Registered on the resolver when
handler/entry/api.py imports this module; left out of the OpenAPI document (no API operation).

Served without API authorization (a browser's navigation sends neither a SigV4 signature nor ``x-api-key``); the
page then calls the API with the key the user types, kept in the tab's sessionStorage. The page is plain HTML, one
script and one stylesheet: no framework, no build step, nothing from another origin. Its Content-Security-Policy
lets only this origin's script and style run and be called, and the script renders caller text and model output
as text, never as markup.

Nothing of the request is logged here: the routes read no body and serve only files of a fixed list.
"""

from __future__ import annotations

import hashlib
import html
import re
from functools import cache
from http import HTTPStatus
from pathlib import Path

from aws_lambda_powertools.event_handler import Response

from handler.core.errors import NotFound
from handler.entry.api_resolver import app, route

CONSOLE_DIR = Path(__file__).with_name("console")
PAGE = "index.html"
#: The files the page loads, and the media type each is served with; any other name is not found.
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
#: Only this origin's script, style and API calls; no inline script or style, no frames, no forms posted elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
#: Where the page's copy names the stage prefix its files are under (index.html).
_PREFIX_MARK = "{{prefix}}"
#: A stage prefix as API Gateway writes it (``/v1``); anything else is left out rather than put in the page.
_SAFE_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*")


@cache
def _text(name: str) -> str:
    return (CONSOLE_DIR / name).read_text(encoding="utf-8")


@cache
def _version(name: str) -> str:
    return hashlib.sha256(_text(name).encode("utf-8")).hexdigest()[:16]


def _headers(cache_control: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": cache_control,
    }


def _stage_prefix() -> str:
    """What the caller's URL has before ``/``: ``/v1`` deployed (also when called as ``/v1``, without the slash),
    nothing through ``make serve``."""
    event = app.current_event
    called = str((event.raw_event.get("requestContext") or {}).get("path") or "").rstrip("/")
    return called if _SAFE_PREFIX.fullmatch(called) else ""


def render_page(prefix: str) -> str:
    """The page with its files' URLs under ``prefix`` and each file's version in its URL."""
    page = _text(PAGE).replace(_PREFIX_MARK, html.escape(prefix, quote=True))
    for name in ASSETS:
        page = page.replace("{{version:" + name + "}}", _version(name))  # a changed file is never read from a cache
    return page


@route("GET", "/", takes_body=False, include_in_schema=False)
def console_page() -> Response[str]:
    """The console page; read again on every visit (its files' versions are in their URLs)."""
    return Response(HTTPStatus.OK, "text/html; charset=utf-8", render_page(_stage_prefix()), _headers("no-cache"))


@route("GET", "/console/<asset>", takes_body=False, include_in_schema=False)
def console_asset(asset: str) -> Response[str]:
    """One of the page's files; kept for a day by browsers (a changed file has another version in its URL)."""
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise NotFound(
            f"the console's files are {', '.join(sorted(ASSETS))}", log_message="a console file that does not exist"
        )
    return Response(HTTPStatus.OK, media_type, _text(asset), _headers("public, max-age=86400"))
