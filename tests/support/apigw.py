"""API Gateway REST API proxy events shaped as the samples in events/ (from `sam local generate-event`), the
sample requests of the API's routes, and answers decoded and checked."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from typing import Any

from tests.support.events import load_event

JSON = "application/json"


def proxy_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str | None = JSON,
    headers: dict[str, str] | None = None,
    resource: str | None = None,
    query: dict[str, str] | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    """A proxy event for ``method path``; a ``body`` that is not str or bytes is sent as JSON."""
    event = copy.deepcopy(load_event("api-result.json"))
    sent = dict(event["headers"])
    if body is not None and content_type is not None:
        sent["Content-Type"] = content_type
    sent.update(headers or {})
    if body is not None and not isinstance(body, str | bytes):
        body = json.dumps(body)
    if isinstance(body, bytes) or (base64_body and body is not None):
        raw = body if isinstance(body, bytes) else body.encode("utf-8")
        body, base64_body = base64.b64encode(raw).decode("ascii"), True
    event.update(
        httpMethod=method,
        path=path,
        resource=resource or path,
        body=body,
        isBase64Encoded=base64_body,
        headers=sent,
        multiValueHeaders={name: [value] for name, value in sent.items()},
        pathParameters=None,
        queryStringParameters=query,
        multiValueQueryStringParameters={name: [value] for name, value in query.items()} if query else None,
    )
    event["requestContext"].update(path="/prod" + path, httpMethod=method, resourcePath=resource or path)
    return event


@dataclass
class ApiAnswer:
    """A proxy integration's response, decoded."""

    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.body["error"]
        return error


def decode(result: dict[str, Any]) -> ApiAnswer:
    """Status, headers (single- and multi-value merged, names as sent) and the JSON body of a proxy result."""
    headers = {name: ", ".join(values) for name, values in (result.get("multiValueHeaders") or {}).items()}
    headers.update(result.get("headers") or {})
    raw = result.get("body") or ""
    text = base64.b64decode(raw).decode("utf-8") if result.get("isBase64Encoded") else raw
    return ApiAnswer(int(result["statusCode"]), headers, json.loads(text) if text else None)


ROUTES = ["summarize", "translate", "chat"]
SAMPLES = {"summarize": "api-summarize.json", "translate": "api-translate.json", "chat": "api-chat.json"}


def sample(route: str, max_tokens: int = 16, **changes: Any) -> dict[str, Any]:
    """The body of a sample API event, with few tokens to generate.

    Summaries are paragraphs here: the engine's KV cache is process-wide, and test_service's first request
    (the bullet summary) must not find its whole prompt cached by this module.
    """
    body: dict[str, Any] = json.loads(load_event(SAMPLES[route])["body"])
    body["options"] = {**body.get("options", {}), "max_tokens": max_tokens}
    if route == "summarize":
        body["style"] = "paragraph"
    return {**body, **changes}


def post(route: str, body: Any, **kwargs: Any) -> dict[str, Any]:
    return proxy_event("POST", f"/{route}", body, **kwargs)


def get_result(item_id: str) -> dict[str, Any]:
    return proxy_event("GET", f"/results/{item_id}", resource="/results/{id}")


def assert_error(answer: ApiAnswer, status: int, error_type: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert set(answer.body) == {"error"}, answer.body
    assert answer.error["type"] == error_type, answer.error
    assert answer.headers["Content-Type"] == "application/json"
    assert "Traceback" not in json.dumps(answer.body)
    return answer.error
