"""Requests that may not be stored (store: false) write nothing, so they are never queued: refused where they would
have to be.
"""

from __future__ import annotations

import pytest

from handler.entry import api
from handler.entry import direct as direct_invoke
from handler.entry.runtime import get_service
from handler.usecases import queueing
from tests.support.apigw import decode, proxy_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table

# -- store: false writes nothing, so it is never queued ---------------------------------------------

UNSTORED_CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "options": {"store": False, "max_tokens": 4}}


def test_an_async_request_that_may_not_be_stored_is_refused_and_nothing_is_written(
    service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    direct = direct_invoke.lambda_handler({"task": "chat", "mode": "async", **UNSTORED_CHAT}, lambda_context)
    prefer = proxy_event("POST", "/chat", UNSTORED_CHAT, headers={"Prefer": "respond-async"})
    through_api = decode(api.lambda_handler(prefer, lambda_context))

    assert direct["error"]["type"] == "InvalidRequest"
    assert "store" in direct["error"]["message"]
    assert through_api.status == 422
    assert through_api.body["error"]["details"]["fields"][0]["field"] == "options.store"
    assert service_env.items() == []


def test_a_request_that_may_not_be_stored_is_not_queued_when_it_cannot_finish_in_time(
    service_env: Table, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handler.usecases.text_service import TextService

    # predicted far past the API's budget, whatever speeds this process measured earlier
    monkeypatch.setattr(TextService, "predicted_seconds", lambda self, request, steps=False, prepared=None: 1e9)

    answer = decode(api.lambda_handler(proxy_event("POST", "/chat", UNSTORED_CHAT), lambda_context))

    assert answer.status == 503
    assert answer.body["error"]["type"] == "DeadlineReached"
    assert "store" in answer.body["error"]["message"]
    assert service_env.items() == []


def test_a_batch_line_that_may_not_be_stored_is_reported_invalid(service_env: Table) -> None:
    report = queueing.queue_requests(get_service(), [(1, {"task": "chat", **UNSTORED_CHAT})])

    assert report.new == 0
    assert report.invalid[0][0] == 1
    assert "store" in report.invalid[0][1]
    assert service_env.items() == []
