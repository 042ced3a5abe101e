"""The API Gateway front in-process: CORS headers and preflight answers where CORS_ORIGIN names an origin, none
where it is unset.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from handler.entry import api, api_batches, api_console, api_openai, api_resolver
from tests.support.apigw import ApiAnswer, post, proxy_event, sample
from tests.support.local_aws import Table


@pytest.fixture
def cors_origin(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The API module as loaded where CORS_ORIGIN names a browser origin (the resolver reads it at import)."""
    origin = "https://app.example.com"
    monkeypatch.setenv("CORS_ORIGIN", f"{origin}, https://staging.example.com")
    _reload_api()
    yield origin
    monkeypatch.delenv("CORS_ORIGIN")
    _reload_api()


def _reload_api() -> None:
    # The resolver is built at import, then the route modules register on it.
    for module in (api_resolver, api_openai, api_batches, api_console, api):
        importlib.reload(module)


def test_api_cors_origin_gets_preflight_and_headers(
    cors_origin: str, api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    preflight = call(
        proxy_event("OPTIONS", "/summarize", headers={"Origin": cors_origin, "Access-Control-Request-Method": "POST"})
    )
    answer = call(post("summarize", sample("summarize", mode="async"), headers={"Origin": cors_origin}))
    refused = call(post("summarize", {}, headers={"Origin": cors_origin}))
    stranger = call(post("summarize", sample("summarize", mode="async"), headers={"Origin": "https://evil.example"}))

    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == cors_origin
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Prefer" in preflight.headers["Access-Control-Allow-Headers"]
    assert answer.status == 202
    assert answer.headers["Access-Control-Allow-Origin"] == cors_origin
    assert "Location" in answer.headers["Access-Control-Expose-Headers"]
    assert (refused.status, refused.headers["Access-Control-Allow-Origin"]) == (422, cors_origin)
    assert "Access-Control-Allow-Origin" not in stranger.headers


def test_api_without_cors_origin_sends_no_cors_headers(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    origin = {"Origin": "https://app.example.com"}

    preflight = call(proxy_event("OPTIONS", "/summarize", headers=origin))
    answer = call(post("summarize", sample("summarize", mode="async"), headers=origin))

    assert preflight.status == 405
    assert not [name for name in answer.headers if name.startswith("Access-Control-")]
