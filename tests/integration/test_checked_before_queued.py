"""Nothing is promised before it is checked: a text over the context window or a request too large to store is
refused before it is queued or written.
"""

from __future__ import annotations

import pytest

from handler.entry import api
from handler.entry import direct as direct_invoke
from handler.entry.runtime import get_service
from handler.usecases import queueing
from tests.support.apigw import decode, proxy_event
from tests.support.hostile_input import MARKER, OVERSIZED_CHAT, logged
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table

# -- nothing is promised before it is checked ---------------------------------------------------------

#: Far over the tiny model's 4,096-token window, well under the text limit and the API's body limit.
OVERLONG_TEXT = " ".join(f"{MARKER}-{n}" for n in range(4000))


@pytest.fixture
def without_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model in this process, and loading one fails: a check before queueing counts with the vocabulary."""
    from handler import engine as engine_module

    monkeypatch.setattr(engine_module.process_engine, "engine", None)
    monkeypatch.setattr(engine_module.process_engine, "load", lambda settings: pytest.fail("the model was loaded"))


@pytest.mark.parametrize("prefer", [{"Prefer": "respond-async"}, {}], ids=["async", "predicted-late"])
def test_a_text_over_the_context_window_is_refused_before_it_is_queued(
    prefer: dict[str, str],
    service_env: Table,
    lambda_context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    without_the_model: None,
) -> None:
    # Speeds so slow that any request is predicted past the API's budget, whatever was measured before.
    monkeypatch.setenv("EXPECTED_PROMPT_TOKENS_PER_S", "0.001")
    # A chat has no chunked answer: a text over the window cannot be answered at all.
    body = {"messages": [{"role": "user", "content": OVERLONG_TEXT}]}
    event = proxy_event("POST", "/chat", body, headers=prefer)

    answer = decode(api.lambda_handler(event, lambda_context))

    assert answer.status == 413, answer
    assert answer.body["error"]["type"] == "InputTooLong"
    assert answer.body["error"]["details"]["context_window"] == 4096
    assert answer.body["error"]["details"]["prompt_tokens"] > 4096
    assert service_env.items() == []


def test_a_direct_async_request_over_the_context_window_is_refused(
    service_env: Table, lambda_context: FakeLambdaContext, without_the_model: None
) -> None:
    answer = direct_invoke.lambda_handler(
        {"task": "summarize", "mode": "async", "text": OVERLONG_TEXT, "strategy": "single"}, lambda_context
    )

    assert answer["error"]["type"] == "InputTooLong"
    assert service_env.items() == []


def test_a_request_too_large_to_store_is_a_clear_caller_error_and_nothing_is_written(
    service_env: Table, lambda_context: FakeLambdaContext, caplog: pytest.LogCaptureFixture
) -> None:
    from handler.domain.item_limits import MAX_STORED_REQUEST_BYTES

    answer = direct_invoke.lambda_handler({**OVERSIZED_CHAT, "mode": "async"}, lambda_context)
    report = queueing.queue_requests(get_service(), [(1, OVERSIZED_CHAT)])

    assert answer["error"]["type"] == "InvalidRequest", answer
    assert f"over the {MAX_STORED_REQUEST_BYTES}" in answer["error"]["message"]
    assert "options.store false" in answer["error"]["message"]
    assert report.new == 0
    assert report.invalid[0][0] == 1
    assert service_env.items() == []
    assert MARKER not in logged(caplog)
