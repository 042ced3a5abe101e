"""One generation however many callers ask at once: concurrent identical requests generate once, a caller out of
time gets 202, a failed generation leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

import pytest

from handler.entry import api
from handler.entry import direct as direct_invoke
from handler.entry.runtime import get_service
from tests.support.apigw import decode, proxy_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table

# -- one generation however many callers ask at once -------------------------------------------------

SINGLE_FLIGHT_CHAT = {
    "task": "chat",
    "messages": [{"role": "user", "content": "Say hello."}],
    "options": {"max_tokens": 8},
}


def test_eight_concurrent_identical_requests_generate_once(
    service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    start = Barrier(8)

    def call(_: int) -> Any:
        start.wait()  # all eight look the request up before any has finished it
        return direct_invoke.lambda_handler(dict(SINGLE_FLIGHT_CHAT), lambda_context)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, range(8)))

    assert len(generations) == 1
    assert [answer["status"] for answer in answers] == ["DONE"] * 8, answers
    assert sorted(answer["cached"] for answer in answers) == [False] + [True] * 7
    assert len({answer["output"] for answer in answers}) == 1
    (item,) = service_env.items()
    assert item["status"] == "DONE"


def test_a_caller_whose_time_runs_out_while_another_generates_gets_202_without_generating(
    service_env: Table,
    lambda_context: FakeLambdaContext,
    generations: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from handler.domain.requests import parse_request
    from handler.domain.stored_item import pending_fields

    monkeypatch.setenv("API_BUDGET_S", "1")
    monkeypatch.setenv("SAFETY_MARGIN_S", "0")
    service = get_service()
    assert service.stored_requests.table is not None
    body = {key: value for key, value in SINGLE_FLIGHT_CHAT.items() if key != "task"}
    item_id = service.request_id(parse_request(SINGLE_FLIGHT_CHAT))
    # another caller holds the request, for longer than this caller's budget
    assert service.stored_requests.table.leases.claim_or_create(
        item_id, "other-caller", 600.0, pending_fields(parse_request(SINGLE_FLIGHT_CHAT))
    )

    answer = decode(api.lambda_handler(proxy_event("POST", "/chat", body), lambda_context))

    assert answer.status == 202, answer
    assert answer.body["status"] == "RUNNING"
    assert answer.body["cached"] is False
    assert answer.headers["Location"].endswith(f"/results/{item_id}")
    assert generations == []


def test_a_failed_generation_leaves_nothing_behind(
    service_env: Table, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handler import engine as engine_module
    from handler.core.errors import GenerationError

    def fail(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise GenerationError("llama_decode returned -3")

    monkeypatch.setattr(engine_module.Engine, "generate", fail)

    answer = direct_invoke.lambda_handler(dict(SINGLE_FLIGHT_CHAT), lambda_context)

    assert answer["error"]["type"] == "GenerationError"
    assert service_env.items() == []
