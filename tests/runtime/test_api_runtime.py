"""The API entry point served by the real Lambda Runtime Interface Emulator, against moto server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from handler.engine import model_identity
from handler.entry import api
from handler.entry.worker import worker_handler
from scripts.local.emulator import LambdaEmulator
from tests.support.apigw import ApiAnswer, decode, proxy_event
from tests.support.emulator import start_emulator
from tests.support.events import load_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table


def _invoke(emulator: LambdaEmulator, event: dict[str, Any]) -> ApiAnswer:
    return decode(emulator.invoke(event))


def _small(name: str, max_tokens: int = 16) -> dict[str, Any]:
    """A sample API event with few tokens to generate."""
    event = load_event(name)
    body = json.loads(event["body"])
    body["options"] = {**body.get("options", {}), "max_tokens": max_tokens}
    event["body"] = json.dumps(body)
    return event


def _result_event(location: str) -> dict[str, Any]:
    return proxy_event("GET", location.removeprefix("/prod"), resource="/results/{id}")


def _sqs_event(item_id: str) -> dict[str, Any]:
    body = json.dumps({"id": item_id})
    return {
        "Records": [
            {
                "messageId": "3f1c5a52-7d1e-4c55-9a57-6a0d3c1b2e01",
                "receiptHandle": "AQEB-receipt-handle",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1767225600000",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1767225600001",
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work",
                "awsRegion": "us-east-1",
            }
        ]
    }


def _generations(emulator: LambdaEmulator) -> int:
    return emulator.logs().count('"message":"generation finished"')


def test_api_runtime_serves_a_cached_result_without_the_model(
    service_env: Table,
    tiny_model: Path,
    lambda_context: FakeLambdaContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a result generated once (in-process, with the model)
    monkeypatch.setenv("EXPECTED_EVAL_TOKENS_PER_S", "5000")
    monkeypatch.setenv("EXPECTED_PROMPT_TOKENS_PER_S", "5000")
    monkeypatch.setenv("EXPECTED_LOAD_S", "0")
    event = _small("api-chat.json")
    first = decode(api.lambda_handler(event, lambda_context))
    assert (first.status, first.body["status"]) == (200, "DONE")
    # AND a fresh execution environment whose model file does not exist (its identity is pinned)
    absent = tmp_path / "absent" / "model.gguf"
    settings = {"MODEL_PATH": str(absent), "MODEL_SHA256": model_identity(tiny_model).sha256}
    fast = {"EXPECTED_EVAL_TOKENS_PER_S": "5000", "EXPECTED_PROMPT_TOKENS_PER_S": "5000", "EXPECTED_LOAD_S": "0"}
    with start_emulator(
        service_env, tmp_path / "emulator.log", "handler.entry.api.lambda_handler", **settings, **fast
    ) as emulator:
        # WHEN the same request comes through API Gateway
        cached = _invoke(emulator, event)
        # AND, for contrast, one that is not in the table and predicted to fit the budget
        missing = _invoke(emulator, _small("api-chat.json", max_tokens=17))

    # THEN the stored result is served, and nothing was generated in that environment
    assert cached.status == 200, cached
    assert cached.headers["Content-Type"] == "application/json"
    assert cached.body["cached"] is True
    assert (cached.body["id"], cached.body["output"]) == (first.body["id"], first.body["output"])
    assert _generations(emulator) == 0
    assert '"message":"answered from table"' in emulator.logs()
    # AND generating there would have needed the model that is not there
    assert missing.status == 503
    assert missing.error["type"] == "ModelLoadError"
    assert "model file not found" in missing.error["message"]


def test_api_runtime_request_over_budget_is_queued_then_done(
    service_env: Table, tiny_model: Path, lambda_context: FakeLambdaContext, tmp_path: Path
) -> None:
    # GIVEN an API whose time budget no generation fits in
    with start_emulator(
        service_env,
        tmp_path / "emulator.log",
        "handler.entry.api.lambda_handler",
        MODEL_PATH=str(tiny_model),
        API_BUDGET_S="0.5",
    ) as emulator:
        # WHEN a request comes
        queued = _invoke(emulator, _small("api-translate.json", max_tokens=32))
        # THEN it is queued: 202 with where to read the result, still pending
        assert queued.status == 202, queued
        assert queued.body["status"] == "PENDING"
        location = queued.headers["Location"]
        assert location == f"/prod/results/{queued.body['id']}"
        pending = _invoke(emulator, _result_event(location))
        assert (pending.status, pending.body["status"]) == (200, "PENDING")

        # WHEN a worker takes the queued work (as the SQS event source would invoke it)
        report = worker_handler(_sqs_event(queued.body["id"]), lambda_context)

        # THEN the result is DONE at its location
        assert report == {"batchItemFailures": []}
        done = _invoke(emulator, _result_event(location))
    assert done.status == 200, done
    assert done.body["status"] == "DONE"
    assert done.body["task"] == "translate"
    assert isinstance(done.body["output"], str)
    assert done.body["metrics"]["completion_tokens"] > 0
    assert _generations(emulator) == 0  # the API environment queued the work and never generated
