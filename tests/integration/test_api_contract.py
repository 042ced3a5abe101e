"""Schemathesis drives the API from its OpenAPI document: generated requests become proxy events for the
Lambda entry point, called in-process, and every response must be one the document describes."""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.strategies import SearchStrategy
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from handler.entry import api
from tests.support.apigw import proxy_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table, local_batch_bucket

CONTRACT_BUCKET = "llm-batches-contract"
#: Per operation and generation mode; eight operations, positive and negative data: at least 200 cases in all.
CASES_PER_OPERATION = 30
MIN_CASES = 200
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


Case = schemathesis.Case[Any]


def as_proxy_event(case: Case) -> tuple[dict[str, Any], requests.PreparedRequest]:
    """The API Gateway REST proxy event for the HTTP request a generated case makes."""
    prepared = requests.Request(**case.as_transport_kwargs(base_url="https://api.test")).prepare()
    url = urlsplit(prepared.url or "")
    body = prepared.body.encode("utf-8") if isinstance(prepared.body, str) else prepared.body
    assert body is None or isinstance(body, bytes), type(body)
    text, base64_body = None, False
    if body is not None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, base64_body = base64.b64encode(body).decode("ascii"), True
    headers = {
        name: value if isinstance(value, str) else value.decode("latin-1") for name, value in prepared.headers.items()
    }
    event = proxy_event(
        str(prepared.method),
        unquote(url.path),  # API Gateway hands the function the decoded path
        text,
        content_type=None,
        headers=headers,
        query=dict(parse_qsl(url.query)) or None,
    )
    event["isBase64Encoded"] = base64_body
    return event, prepared


def as_response(result: dict[str, Any], request: requests.PreparedRequest, elapsed: float) -> schemathesis.Response:
    headers: dict[str, list[str]] = {
        name: list(values) for name, values in (result.get("multiValueHeaders") or {}).items()
    }
    for name, value in (result.get("headers") or {}).items():
        headers.setdefault(name, [value])
    raw = result.get("body") or ""
    content = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode("utf-8")
    return schemathesis.Response(
        status_code=int(result["statusCode"]),
        headers=headers,
        content=content,
        request=request,
        elapsed=elapsed,
        verify=True,
    )


@pytest.fixture
def contract_env(api_env: Table, monkeypatch: pytest.MonkeyPatch) -> Iterator[Table]:
    """The API's environment (speeds the tiny model keeps up with) with a short budget that bounds every case, and
    the batch bucket that files and batches are kept in (generated requests come with no identity: one is set)."""
    # Generated texts may be documents of many chunks: a short budget queues them (202) instead of waiting.
    monkeypatch.setenv("API_BUDGET_S", "4")
    monkeypatch.setenv("UNAUTHENTICATED_OWNER", "contract-tests")
    with local_batch_bucket(monkeypatch, api_env.endpoint_url, CONTRACT_BUCKET):
        yield api_env


def test_api_contract_generated_requests_get_documented_answers(
    contract_env: Table, lambda_context: FakeLambdaContext
) -> None:
    document = api.openapi_document()
    schema = schemathesis.openapi.from_dict(document)
    executed: Counter[tuple[str, str, int]] = Counter()

    def run(case: Case, mode: schemathesis.GenerationMode) -> None:
        event, request = as_proxy_event(case)
        started = time.perf_counter()
        result = api.lambda_handler(event, lambda_context)
        response = as_response(result, request, time.perf_counter() - started)
        executed[(case.operation.label, mode.value, response.status_code)] += 1
        assert response.status_code < 500, (case.as_curl_command(), response.content[:500])
        case.validate_response(response, checks=CHECKS)

    for path, item in document["paths"].items():
        for method, spec in item.items():
            operation = schema[path][method.upper()]
            modes = [schemathesis.GenerationMode.POSITIVE]
            if spec.get("parameters") or spec.get("requestBody"):  # nothing to make invalid otherwise
                modes.append(schemathesis.GenerationMode.NEGATIVE)
            for mode in modes:
                _hypothesis_test(operation.as_strategy(generation_mode=mode), partial(run, mode=mode))()

    total = sum(executed.values())
    print(f"schemathesis cases: {total}")
    for (label, mode_name, status), count in sorted(executed.items()):
        print(f"  {label} {mode_name} {status}: {count}")
    assert total >= MIN_CASES
    # The generated requests were answered, not only refused (a random id is unknown: 404).
    answered = {
        label for (label, mode_name, status) in executed if mode_name == "positive" and status in (200, 202, 404)
    }
    assert answered == {
        "POST /summarize",
        "POST /translate",
        "POST /chat",
        "GET /results/{id}",
        "POST /v1/chat/completions",
        "GET /v1/chat/completions/{completion_id}",
        "GET /v1/models",
        "GET /v1/models/{model}",
        "POST /v1/files",
        "GET /v1/files",
        "GET /v1/files/{file_id}",
        "DELETE /v1/files/{file_id}",
        "GET /v1/files/{file_id}/content",
        "POST /v1/batches",
        "GET /v1/batches",
        "GET /v1/batches/{batch_id}",
        "POST /v1/batches/{batch_id}/cancel",
    }, executed


def _hypothesis_test(strategy: SearchStrategy[Case], body: Callable[[Case], None]) -> Callable[[], None]:
    @settings(
        max_examples=CASES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=strategy)
    def test(case: Case) -> None:
        body(case)

    return test
