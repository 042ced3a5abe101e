"""Batch files through S3, as deployed: a file put under input/ is queued by the batch-files function (an S3
event), the scheduled run generates its requests and writes its output and error files under output/;
moto server stands in for S3 and DynamoDB."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from handler.entry import batch_bucket, schedule
from handler.entry.runtime import get_service
from tests.support.events import s3_put_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table, local_batch_bucket

BUCKET = "llm-batches-test"
MARKER = "zq-s3-marker-41d0"


@pytest.fixture
def s3(service_env: Table, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The batch bucket on the moto server, and the environment the function reaches it with."""
    with local_batch_bucket(monkeypatch, service_env.endpoint_url, BUCKET) as client:
        yield client


def put_event(client: Any, key: str) -> dict[str, Any]:
    return s3_put_event(client, BUCKET, key)


def read_jsonl(client: Any, key: str) -> list[dict[str, Any]]:
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode("utf-8")
    return [json.loads(line) for line in body.splitlines()]


def read_json(client: Any, key: str) -> dict[str, Any]:
    return dict(json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()))


def served() -> str:
    return get_service().settings.model_path.name.removesuffix(".gguf")


def openai_lines() -> list[Any]:
    def line(custom_id: str, **body: Any) -> dict[str, Any]:
        messages = [{"role": "user", "content": f"Say hi to {custom_id}."}]
        body = {"model": served(), "messages": messages, "max_tokens": 4, **body}
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}

    return [
        line("a"),
        line("b", seed=3),
        f"{{not json {MARKER}",
        line("c", logprobs=True),
        {**line("d"), "url": "/v1/embeddings"},
        line("e", temperature=9),
        line("f", messages=[{"role": "user", "content": "Bye."}]),
    ]


def bedrock_lines() -> list[Any]:
    def record(record_id: str, **model_input: Any) -> dict[str, Any]:
        messages = [{"role": "user", "content": [{"type": "text", "text": f"Say hi to {record_id}."}]}]
        return {"recordId": record_id, "modelInput": {"max_tokens": 4, "messages": messages, **model_input}}

    return [
        record("REC00000001"),
        record("REC00000002", system="Be brief."),
        record("REC00000003", top_k=5),
        record("REC00000004", messages=[]),
        record("REC00000005", temperature=0.5),
    ]


@pytest.mark.parametrize(
    ("lines", "id_field", "valid", "invalid"),
    [
        (openai_lines, "custom_id", {"a", "b", "f"}, {"c", "d", "e", None}),
        (bedrock_lines, "recordId", {"REC00000001", "REC00000002", "REC00000005"}, {"REC00000003", "REC00000004"}),
    ],
    ids=["openai", "bedrock"],
)
def test_a_batch_file_put_in_the_bucket_comes_back_as_output_and_error_files_with_every_id_once(
    s3: Any,
    service_env: Table,
    lambda_context: FakeLambdaContext,
    lines: Any,
    id_field: str,
    valid: set[str],
    invalid: set[str | None],
) -> None:
    # GIVEN a batch file of valid and invalid lines put under input/
    key = "input/nightly run.jsonl"
    body = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines())
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode("utf-8"))

    # WHEN S3 notifies the batch-files function
    received = batch_bucket.batch_file_handler(put_event(s3, key), lambda_context)

    # THEN its valid lines are queued and its progress is readable in the bucket
    assert "error" not in received, received
    progress = read_json(s3, "output/nightly run.progress.json")
    assert progress["queued"] == len(valid)
    assert progress["finished"] is False
    assert len(service_env.items()) == len(valid)

    # WHEN the scheduled run works through the queue and checks the open batches
    run = schedule.schedule_handler({"dispatch": False}, lambda_context)

    # THEN the output and error files account for every caller id exactly once
    assert "error" not in run, run
    assert run["run"]["done"] == len(valid)
    output = read_jsonl(s3, "output/nightly run.output.jsonl")
    errors = read_jsonl(s3, "output/nightly run.errors.jsonl")
    assert Counter(record[id_field] for record in output) == Counter(valid)
    assert Counter(record[id_field] for record in errors) == Counter(invalid)
    final = read_json(s3, "output/nightly run.progress.json")
    assert final["finished"] is True
    assert final["done"] == len(valid)
    assert MARKER not in json.dumps(errors)
    listed = [entry["Key"] for entry in s3.list_objects_v2(Bucket=BUCKET, Prefix="manifests/")["Contents"]]
    assert [name.split("/")[1] for name in listed] == ["done"]

    # AND a later run leaves the finished batch alone
    again = schedule.schedule_handler({"dispatch": False}, lambda_context)
    assert again["batches"] == []


def test_a_file_outside_input_is_skipped(s3: Any, lambda_context: FakeLambdaContext, service_env: Table) -> None:
    s3.put_object(Bucket=BUCKET, Key="output/x.output.jsonl", Body=b"{}\n")

    received = batch_bucket.batch_file_handler(put_event(s3, "output/x.output.jsonl"), lambda_context)

    assert received == {"files": []}
    assert service_env.items() == []


def test_a_malformed_event_is_answered_in_the_error_shape(
    lambda_context: FakeLambdaContext, service_env: Table
) -> None:
    answer = batch_bucket.batch_file_handler({"Records": "x"}, lambda_context)

    assert answer["error"]["type"] == "InvalidRequest"


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_batch_whose_input_is_gone_closes_as_failed_and_the_others_get_their_output_in_the_same_run(
    s3: Any, service_env: Table, lambda_context: FakeLambdaContext, change: str
) -> None:
    # GIVEN two batch files, both queued
    for key in ("input/first.jsonl", "input/second.jsonl"):
        body = "".join(json.dumps(line) + "\n" for line in openai_lines()[:2])
        s3.put_object(Bucket=BUCKET, Key=key, Body=body.replace("Say hi", f"Say hi from {key}").encode("utf-8"))
        assert "error" not in batch_bucket.batch_file_handler(put_event(s3, key), lambda_context)
    # AND the first one's input is replaced by other content under the same key, or removed, before it finished
    if change == "replaced":
        s3.put_object(Bucket=BUCKET, Key="input/first.jsonl", Body=b'{"other": "content"}\n')
    else:
        s3.delete_object(Bucket=BUCKET, Key="input/first.jsonl")

    # WHEN the scheduled run works through the queue and checks the open batches
    run = schedule.schedule_handler({"dispatch": False}, lambda_context)

    # THEN the second batch gets its output in this run
    assert "error" not in run, run
    assert Counter(record["custom_id"] for record in read_jsonl(s3, "output/second.output.jsonl")) == {"a": 1, "b": 1}
    # AND the first is closed as failed, its error file (its own, beside the input's name) listing its requests
    failed = next(batch for batch in run["batches"] if batch["input"] == "input/first.jsonl")
    assert failed["finished"] is True
    assert "removed or replaced" in failed["failed_batch"]
    errors = read_jsonl(s3, failed["errors_file"])
    assert [record["line"] for record in errors] == [1, 2]
    assert {record["error"]["type"] for record in errors} == {"BatchInputGone"}
    listed = [entry["Key"] for entry in s3.list_objects_v2(Bucket=BUCKET, Prefix="manifests/")["Contents"]]
    assert [name.split("/")[1] for name in listed] == ["done", "done"]
    done = [read_json(s3, name) for name in listed]
    assert [manifest.get("failed") is not None for manifest in sorted(done, key=lambda m: m["input"])] == [True, False]
