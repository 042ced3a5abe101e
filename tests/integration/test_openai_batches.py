"""OpenAI's Files and Batches API through the API's Lambda entry point, with S3 and DynamoDB on the moto server:
the lifecycle (upload, create, scheduled runs, output files), whose objects they are, cancel, and the hostile
inputs of issue 35, each answered as OpenAI answers it with nothing half-queued and no caller text logged."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handler.core.errors import StoreError
from handler.core.settings import get_settings
from handler.entry import api, batch_bucket, schedule
from handler.entry.api_request_body import MAX_UPLOAD_BYTES
from handler.entry.runtime import get_service
from handler.usecases import openai_batches
from scripts.batch import export as export_results
from tests.support.apigw import ApiAnswer, decode, proxy_event
from tests.support.events import s3_put_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table, local_batch_bucket

BUCKET = "llm-batches-api-test"
ALICE = "key-alice-0001"
BOB = "key-bob-0002"

Call = Callable[..., ApiAnswer]


@pytest.fixture
def s3(api_env: Table, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with local_batch_bucket(monkeypatch, api_env.endpoint_url, BUCKET) as client:
        yield client


@pytest.fixture
def call(s3: Any, lambda_context: FakeLambdaContext) -> Call:
    """One API request as the caller with this API key id (None: no identity at all)."""

    def invoke(method: str, path: str, body: Any = None, *, key: str | None = ALICE, **options: Any) -> ApiAnswer:
        event = proxy_event(method, path, body, **options)
        event["requestContext"]["identity"]["apiKeyId"] = key
        result = api.lambda_handler(event, lambda_context)
        headers = {**(result.get("headers") or {}), **(result.get("multiValueHeaders") or {})}
        if "application/x-ndjson" in str(headers.get("Content-Type")):
            return ApiAnswer(int(result["statusCode"]), {}, result["body"])  # a file's bytes, as text
        return decode(result)

    return invoke


def multipart(content: bytes, purpose: str = "batch", filename: str = "requests.jsonl") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n".encode()
        + content
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload(call: Call, content: bytes, *, key: str | None = ALICE, **fields: str) -> ApiAnswer:
    body, content_type = multipart(content, **fields)
    return call("POST", "/v1/files", body, content_type=content_type, key=key)


def reconfigured() -> None:
    """The settings read again from the environment, as a new execution environment reads them."""
    get_settings.cache_clear()
    get_service.cache_clear()


def served() -> str:
    return get_service().settings.model_path.name.removesuffix(".gguf")


def line(custom_id: str, text: str = "Say hi.", **body: Any) -> dict[str, Any]:
    chat = {"model": served(), "messages": [{"role": "user", "content": text}], "max_tokens": 4, **body}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": chat}


def jsonl(*lines: Any) -> bytes:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in lines).encode("utf-8")


def create_batch(call: Call, file_id: str, *, key: str | None = ALICE, **fields: Any) -> ApiAnswer:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **fields}
    return call("POST", "/v1/batches", body, key=key)


def scheduled_run(lambda_context: FakeLambdaContext) -> dict[str, Any]:
    run: dict[str, Any] = schedule.schedule_handler({"dispatch": False}, lambda_context)
    assert "error" not in run, run
    return run


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(row) for row in text.splitlines()]


# -- the lifecycle --------------------------------------------------------------------------------------------


def test_a_batch_runs_from_upload_to_output_file_and_matches_the_s3_route_and_the_export_script(
    call: Call, s3: Any, api_env: Table, lambda_context: FakeLambdaContext, tmp_path: Path
) -> None:
    # GIVEN a batch file of two good lines and one whose body the chat route refuses (temperature 9)
    content = jsonl(line("a", "Say hi to Ann."), line("b", "Say hi to Bo.", seed=3), line("c", temperature=9))
    uploaded = upload(call, content, filename="nightly.jsonl")
    assert uploaded.status == 200, uploaded.body
    file = uploaded.body
    assert file["object"] == "file"
    assert file["purpose"] == "batch"
    assert file["bytes"] == len(content)
    assert file["filename"] == "nightly.jsonl"

    # WHEN a batch is created over it
    created = create_batch(call, file["id"], metadata={"job": "nightly"})

    # THEN it is in progress, its good lines queued, the refused line counted failed already
    assert created.status == 200, created.body
    batch = created.body
    assert batch["status"] == "in_progress"
    assert batch["object"] == "batch"
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 1}
    assert batch["metadata"] == {"job": "nightly"}
    assert batch["expires_at"] == batch["created_at"] + 86400
    assert {item["status"] for item in api_env.items()} == {"PENDING"}
    assert len(api_env.items()) == 2

    # WHEN a scheduled run generates the lines and advances the batch
    scheduled_run(lambda_context)

    # THEN the batch is completed with an output file and an error file in OpenAI's output format
    done = call("GET", f"/v1/batches/{batch['id']}").body
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert done["completed_at"]
    assert done["finalizing_at"]
    assert done["usage"]["output_tokens"] > 0
    output = call("GET", f"/v1/files/{done['output_file_id']}/content")
    assert output.status == 200
    answered = records(output.body)
    assert [record["custom_id"] for record in answered] == ["a", "b"]
    items = {item["id"]: item for item in api_env.items()}
    for record in answered:
        body = record["response"]["body"]
        assert record["response"]["status_code"] == 200
        assert record["error"] is None
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == items[record["response"]["request_id"]]["output"]
    errors = records(call("GET", f"/v1/files/{done['error_file_id']}/content").body)
    assert [(record["custom_id"], record["response"]["status_code"]) for record in errors] == [("c", 400)]
    described = call("GET", f"/v1/files/{done['output_file_id']}").body
    assert described["purpose"] == "batch_output"
    assert described["bytes"] == len(output.body.encode("utf-8"))

    # AND the S3 route writes the same output file for the same input
    s3.put_object(Bucket=BUCKET, Key="input/same.jsonl", Body=content)
    batch_bucket.batch_file_handler(s3_put_event(s3, BUCKET, "input/same.jsonl"), lambda_context)
    scheduled_run(lambda_context)
    by_s3 = s3.get_object(Bucket=BUCKET, Key="output/same.output.jsonl")["Body"].read().decode("utf-8")
    assert by_s3 == output.body

    # AND the export script, given the same file, finds the batch's results in the table and writes the same file
    source, exported = tmp_path / "nightly.jsonl", tmp_path / "exported.jsonl"
    source.write_bytes(content)
    model = str(get_settings().model_path)
    argv = ["--table", api_env.name, "--model", model, "--input", str(source), "--out", str(exported)]
    assert export_results.main([*argv, "--errors", str(tmp_path / "errors.jsonl")]) == 0
    assert exported.read_text(encoding="utf-8") == output.body

    # AND a later run leaves the ended batch alone
    assert scheduled_run(lambda_context)["batches"] == []


def test_files_and_batches_are_listed_newest_first_and_paged(call: Call, lambda_context: FakeLambdaContext) -> None:
    ids = [upload(call, jsonl(line(f"p{n}", f"Count to {n}."))).body["id"] for n in range(3)]
    batches = [create_batch(call, file_id).body["id"] for file_id in ids]

    first = call("GET", "/v1/batches", query={"limit": "2"}).body
    assert [batch["id"] for batch in first["data"]] == batches[::-1][:2]
    assert first["has_more"] is True
    rest = call("GET", "/v1/batches", query={"limit": "2", "after": first["last_id"]}).body
    assert [batch["id"] for batch in rest["data"]] == [batches[0]]
    assert rest["has_more"] is False

    listed = call("GET", "/v1/files").body
    assert [file["id"] for file in listed["data"]] == ids[::-1]
    oldest_first = call("GET", "/v1/files", query={"order": "asc", "limit": "1"}).body
    assert [file["id"] for file in oldest_first["data"]] == ids[:1]
    assert oldest_first["has_more"] is True

    deleted = call("DELETE", f"/v1/files/{ids[0]}")
    assert deleted.status == 200
    assert deleted.body == {"id": ids[0], "object": "file", "deleted": True}
    assert call("GET", f"/v1/files/{ids[0]}").status == 404

    # A batch whose input file was deleted before it ended fails, saying so.
    scheduled_run(lambda_context)
    assert call("GET", f"/v1/batches/{batches[1]}").body["status"] == "completed"
    orphan = call("GET", f"/v1/batches/{batches[0]}").body
    assert orphan["status"] == "failed"
    assert orphan["errors"]["data"][0]["code"] == "input_file_deleted"


def test_a_batch_whose_first_lines_cannot_be_queued_is_answered_as_made_and_queued_by_the_next_run(
    call: Call, api_env: Table, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the table refuses the create call's queueing (throttled), after the batch was made
    def throttled(*args: Any) -> int:
        raise StoreError("the table is over its capacity", throttled=True)

    file_id = upload(call, jsonl(line("t1", "Say one."), line("t2", "Say two."))).body["id"]
    with monkeypatch.context() as patched:
        patched.setattr(openai_batches, "top_up", throttled)
        created = create_batch(call, file_id)

    # THEN the caller gets its batch (no reason to create it twice), nothing queued yet
    assert created.status == 200, created.body
    assert created.body["status"] == "in_progress"
    assert api_env.items() == []
    # AND the next scheduled run queues, generates and ends it
    scheduled_run(lambda_context)
    assert call("GET", f"/v1/batches/{created.body['id']}").body["request_counts"] == {
        "total": 2,
        "completed": 0,
        "failed": 0,
    }
    scheduled_run(lambda_context)
    ended = call("GET", f"/v1/batches/{created.body['id']}").body
    assert ended["status"] == "completed"
    assert ended["request_counts"] == {"total": 2, "completed": 2, "failed": 0}


# -- whose it is ----------------------------------------------------------------------------------------------


def test_another_caller_gets_404_for_every_file_and_batch_it_did_not_create(call: Call) -> None:
    file_id = upload(call, jsonl(line("x"))).body["id"]
    batch_id = create_batch(call, file_id).body["id"]

    for method, path in [
        ("GET", f"/v1/files/{file_id}"),
        ("GET", f"/v1/files/{file_id}/content"),
        ("DELETE", f"/v1/files/{file_id}"),
        ("GET", f"/v1/batches/{batch_id}"),
        ("POST", f"/v1/batches/{batch_id}/cancel"),
    ]:
        answer = call(method, path, key=BOB)
        assert answer.status == 404, (method, path, answer.body)
        assert answer.error["type"] == "not_found_error"
    assert create_batch(call, file_id, key=BOB).status == 404
    assert call("GET", "/v1/files", key=BOB).body["data"] == []
    assert call("GET", "/v1/batches", key=BOB).body["data"] == []

    # AND the owner still has both, untouched
    assert call("GET", f"/v1/files/{file_id}").status == 200
    assert call("GET", f"/v1/batches/{batch_id}").body["status"] == "in_progress"


def test_a_request_without_identity_is_refused_401_unless_the_local_owner_is_set(
    call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = call("GET", "/v1/files", key=None)
    assert refused.status == 401
    assert refused.error["code"] == "unauthenticated"

    monkeypatch.setenv("UNAUTHENTICATED_OWNER", "local-tests")
    reconfigured()
    assert call("GET", "/v1/files", key=None).status == 200


# -- cancel ---------------------------------------------------------------------------------------------------


def test_a_cancelled_batch_stops_queuing_and_ends_cancelled(
    call: Call, api_env: Table, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a window of one line, and a batch of four
    monkeypatch.setenv("BATCH_WINDOW", "1")
    reconfigured()
    file_id = upload(call, jsonl(*(line(f"k{n}", f"Name fruit number {n}.") for n in range(4)))).body["id"]
    batch_id = create_batch(call, file_id).body["id"]
    assert len(api_env.items()) == 1

    # WHEN it is cancelled at once
    cancelled = call("POST", f"/v1/batches/{batch_id}/cancel")
    assert cancelled.status == 200
    assert cancelled.body["status"] == "cancelling"
    assert cancelled.body["cancelling_at"]
    assert call("GET", f"/v1/batches/{batch_id}").body["status"] == "cancelling"

    # THEN the scheduled run finishes the line in flight, queues no other, and ends the batch
    scheduled_run(lambda_context)
    ended = call("GET", f"/v1/batches/{batch_id}").body
    assert ended["status"] == "cancelled"
    assert ended["cancelled_at"]
    assert ended["request_counts"] == {"total": 4, "completed": 1, "failed": 0}
    assert len(api_env.items()) == 1
    errors = records(call("GET", f"/v1/files/{ended['error_file_id']}/content").body)
    assert [(record["custom_id"], record["error"]["code"]) for record in errors] == [
        (f"k{n}", "batch_cancelled") for n in (1, 2, 3)
    ]
    assert [
        record["custom_id"] for record in records(call("GET", f"/v1/files/{ended['output_file_id']}/content").body)
    ] == ["k0"]

    # AND an ended batch cannot be cancelled again
    again = call("POST", f"/v1/batches/{batch_id}/cancel")
    assert again.status == 409


# -- hostile inputs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code", "line_number"),
    [
        (lambda: jsonl(line("a"), "{not json at all"), "invalid_json_line", 2),
        (lambda: jsonl(line("a"), line("a", "Say bye.")), "duplicate_custom_id", 2),
        (lambda: jsonl(line("a", model="gpt-4o")), "model_not_found", 1),
        (lambda: jsonl({**line("a"), "url": "/v1/embeddings"}), "invalid_url", 1),
        (lambda: jsonl({"task": "chat", "messages": [{"role": "user", "content": "Hi."}]}), "invalid_format", 1),
        (lambda: b"", "empty_file", None),
    ],
    ids=["not-jsonl", "duplicate-custom-id", "unknown-model", "endpoint-of-line", "native-lines", "empty"],
)
def test_a_file_that_is_not_a_batch_fails_in_validating_and_queues_nothing(
    call: Call, api_env: Table, content: Callable[[], bytes], code: str, line_number: int | None
) -> None:
    file_id = upload(call, content()).body["id"]
    created = create_batch(call, file_id)
    assert created.status == 200, created.body
    batch = created.body
    assert batch["status"] == "failed"
    assert batch["failed_at"]
    errors = batch["errors"]["data"]
    assert (errors[0]["code"], errors[0]["line"]) == (code, line_number), errors
    assert api_env.items() == []
    assert call("GET", f"/v1/batches/{batch['id']}").body["status"] == "failed"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {"k": "v" * 600}}, "metadata"),
    ],
    ids=["endpoint", "window", "metadata"],
)
def test_a_batch_request_out_of_bounds_is_refused_400_naming_the_field(
    call: Call, api_env: Table, fields: dict[str, Any], param: str
) -> None:
    file_id = upload(call, jsonl(line("a"))).body["id"]
    refused = create_batch(call, file_id, **fields)
    assert refused.status == 400, refused.body
    assert refused.error["type"] == "invalid_request_error"
    assert refused.error["param"] == param
    assert api_env.items() == []


def test_files_of_another_purpose_are_refused(call: Call, lambda_context: FakeLambdaContext) -> None:
    refused = upload(call, jsonl(line("a")), purpose="fine-tune")
    assert refused.status == 400
    assert refused.error["param"] == "purpose"

    # A batch's own output file is no input: its purpose is batch_output.
    batch_id = create_batch(call, upload(call, jsonl(line("a"))).body["id"]).body["id"]
    scheduled_run(lambda_context)
    output_id = call("GET", f"/v1/batches/{batch_id}").body["output_file_id"]
    again = create_batch(call, output_id)
    assert again.status == 400
    assert again.error["param"] == "input_file_id"


def test_uploads_too_large_or_not_multipart_are_refused_before_parsing(call: Call) -> None:
    too_large = upload(call, b"x" * (MAX_UPLOAD_BYTES + 1))
    assert too_large.status == 413
    assert str(MAX_UPLOAD_BYTES) in too_large.error["message"]
    not_multipart = call("POST", "/v1/files", {"purpose": "batch"})
    assert not_multipart.status == 415
    no_boundary = call("POST", "/v1/files", b"--x\r\n", content_type="multipart/form-data")
    assert no_boundary.status == 415
    no_file = call("POST", "/v1/files", b"--b\r\n\r\n--b--\r\n", content_type="multipart/form-data; boundary=b")
    assert no_file.status == 400
    assert no_file.error["type"] == "invalid_request_error"


def test_unknown_and_malformed_ids_are_404(call: Call) -> None:
    for path in ["/v1/files/file-0000000000000000000000ff", "/v1/files/..%2F..%2Fmanifests", "/v1/batches/batch_x"]:
        answer = call("GET", path)
        assert answer.status == 404, (path, answer.body)


def test_no_caller_text_reaches_the_logs(call: Call, capsys: pytest.CaptureFixture[str]) -> None:
    marker = "zq-batch-marker-7c1e"
    content = jsonl(line(f"id-{marker}", f"Say {marker}."), line(f"id-{marker}", "Again."))
    file_id = upload(call, content, filename=f"{marker}.jsonl").body["id"]
    create_batch(call, file_id, metadata={marker: marker})
    refused = create_batch(call, file_id, metadata={marker: 7, "k" * 65: "v"})
    assert refused.status == 400
    assert refused.error["param"] == "metadata"
    call("GET", f"/v1/files/{marker}")
    captured = capsys.readouterr()
    assert marker not in captured.out + captured.err
