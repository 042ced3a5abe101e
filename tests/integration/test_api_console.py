"""The console's routes in-process (handler/entry/api_console.py): the page and its files with a strict
Content-Security-Policy, under the stage prefix the caller used, and a script that never writes markup.
The page's behaviour in a browser is tests/browser/'s."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from handler.entry import api_console
from tests.support.apigw import proxy_event
from tests.support.lambda_context import FakeLambdaContext

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def get(path: str, called: str | None = None) -> dict[str, Any]:
    """The proxy result of ``GET path``, called as ``called`` (requestContext.path: the stage prefix and the path)."""
    from handler.entry import api

    event = proxy_event("GET", path, None)
    if called is not None:
        event["requestContext"]["path"] = called
    result: dict[str, Any] = api.lambda_handler(event, FakeLambdaContext())
    return result


def headers_of(result: dict[str, Any]) -> dict[str, str]:
    headers = {name: ", ".join(values) for name, values in (result.get("multiValueHeaders") or {}).items()}
    headers.update(result.get("headers") or {})
    return headers


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "ERROR")


def test_console_page_is_served_with_a_strict_policy_and_its_files_under_the_stage_prefix(quiet: None) -> None:
    result = get("/", called="/v1/")
    headers = headers_of(result)

    assert result["statusCode"] == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-cache"
    page = result["body"]
    urls = {}
    for name in api_console.ASSETS:
        found = re.search(rf'"(/v1/console/{re.escape(name)}\?v=[0-9a-f]{{16}})"', page)
        assert found, name
        urls[name] = found.group(1)
    script_url = urls["app.js"]
    # Nothing inline for the policy to refuse: no script body, no style element or attribute, no event handler.
    assert re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S) == [(f' defer src="{script_url}"', "")]
    assert "<style" not in page
    assert not re.search(r"\s(style|on[a-z]+)=", page)


@pytest.mark.parametrize(
    ("called", "prefix"),
    [
        ("/", ""),  # make serve: no stage
        ("/v1", "/v1"),  # the stage's URL without its slash
        ('/v1"><script>alert(1)</script>', ""),  # never put in the page
    ],
)
def test_console_page_names_its_files_under_the_prefix_the_caller_used(quiet: None, called: str, prefix: str) -> None:
    page = get("/", called=called)["body"]

    assert f'src="{prefix}/console/app.js?v=' in page
    assert "alert(1)" not in page


@pytest.mark.parametrize("name", sorted(api_console.ASSETS))
def test_console_files_are_served_with_their_types(quiet: None, name: str) -> None:
    result = get(f"/console/{name}")
    headers = headers_of(result)

    assert result["statusCode"] == 200
    assert headers["Content-Type"] == api_console.ASSETS[name]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert result["body"] == (api_console.CONSOLE_DIR / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["index.html", "secret.txt", "..", "app.js.map"])
def test_console_serves_no_other_file(quiet: None, call: Callable[[dict[str, Any]], Any], name: str) -> None:
    answer = call(proxy_event("GET", f"/console/{name}", None))

    assert answer.status == 404
    assert answer.error == {"type": "NotFound", "message": "the console's files are app.css, app.js"}


def test_console_script_writes_text_never_markup() -> None:
    script = (api_console.CONSOLE_DIR / "app.js").read_text(encoding="utf-8")

    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert 'setAttribute("style"' not in script  # an inline style the policy would refuse
