"""A batch file's output and error records (handler/usecases/batch_export.py): stored results joined on the
caller's ids, custom_id for OpenAI Batch input, recordId for Bedrock records, the line number for native requests.
"""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletion as SdkChatCompletion

from handler.domain.answers import Metrics, ModelInfo
from handler.domain.requests import parse_request
from handler.domain.stored_item import StoredItem
from handler.formats.batch_lines import read_lines
from handler.formats.batch_record import BatchLine
from handler.formats.jsonl import Unreadable
from handler.usecases.batch_export import output_records
from tests.support.batch_lines import SERVED, bedrock_line, numbered, openai_line

# -- output and error records -------------------------------------------------------------------------


def _item(line: BatchLine, status: str, **fields: Any) -> StoredItem:
    """A stored item for a line's request, in ``status``."""
    assert line.request is not None
    request = parse_request(line.request)
    item: dict[str, Any] = {
        "id": f"{line.number:064x}",
        "status": status,
        "task": request.task,
        "request": line.request,
        "created_at": "2026-01-02T03:04:05+00:00",
        "updated_at": "2026-01-02T03:04:06+00:00",
    }
    if status == "DONE":
        item.update(
            output="Hi there.",
            finish_reason="stop",
            metrics=_metrics(),
            model=ModelInfo(file="tiny-phi3.gguf", sha256="ab" * 32),
        )
    return StoredItem.model_validate({**item, **fields})


def _metrics() -> Metrics:
    return Metrics(
        prompt_tokens=7,
        prompt_eval_tokens=7,
        prompt_ms=1.0,
        prompt_tokens_per_s=7000.0,
        completion_tokens=3,
        eval_ms=1.0,
        eval_tokens_per_s=3000.0,
        total_ms=2.0,
        cold_start=False,
        n_threads=2,
        peak_rss_mb=100.0,
    )


def _by_line(lines: list[BatchLine], statuses: dict[int, str]) -> dict[int, StoredItem]:
    return {number: _item(lines[number - 1], status) for number, status in statuses.items()}


def test_openai_records_join_on_custom_id_done_in_output_failed_and_invalid_in_errors() -> None:
    # GIVEN an OpenAI file with a done, a failed, a pending, an unqueued and three invalid lines
    values = numbered(
        openai_line("done"),
        openai_line("failed"),
        openai_line("pending"),
        openai_line("unqueued"),
        openai_line("bad-temperature", temperature=9),
        {**openai_line("bad-url"), "url": "/v1/responses"},
        Unreadable("not JSON: Expecting value at column 1"),
    )
    fmt, lines = read_lines(values, SERVED)
    items = _by_line(lines, {1: "DONE", 2: "FAILED", 3: "PENDING"})

    # WHEN the records are made
    exported = output_records(fmt, lines, items, SERVED)

    # THEN the done line is a 200 response with a chat.completion the SDK reads
    assert exported.counts() == {"done": 1, "failed": 1, "invalid": 3, "unfinished": 1, "not_queued": 1}
    (done,) = exported.output
    assert done["custom_id"] == "done"
    assert done["id"].startswith("batch_req_")
    assert done["error"] is None
    assert done["response"]["status_code"] == 200
    assert done["response"]["request_id"] == items[1].id
    body = SdkChatCompletion.model_validate(done["response"]["body"])
    assert body.choices[0].message.content == "Hi there."
    assert body.model == SERVED
    assert body.usage is not None
    assert body.usage.total_tokens == 10
    assert body.created == 1767323046
    # AND a failed or refused request is the endpoint's error answer; a line that is no request an error
    errors = {record["custom_id"]: record for record in exported.errors}
    assert list(errors) == ["failed", "bad-temperature", "bad-url", None]
    assert errors["failed"]["response"]["status_code"] == 500
    assert errors["failed"]["response"]["body"]["error"]["type"] == "server_error"
    assert errors["failed"]["error"] is None
    refused = errors["bad-temperature"]
    assert refused["error"] is None
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"] == {
        "message": "line 5: body.temperature: Input should be less than or equal to 2",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "InvalidRequest",
    }
    assert errors["bad-url"]["response"] is None
    assert errors["bad-url"]["error"] == {
        "code": "invalid_url",
        "message": "line 6: url: only /v1/chat/completions is served here",
    }
    assert errors[None]["error"]["message"] == "line 7: not JSON: Expecting value at column 1"
    # AND every record's id is its own, the same on every export
    ids = [record["id"] for record in exported.output + exported.errors]
    assert len(set(ids)) == len(ids)
    assert output_records(fmt, lines, items, SERVED) == exported


def test_bedrock_records_join_on_record_id_with_model_output_or_error() -> None:
    values = numbered(
        bedrock_line("DONE1"),
        bedrock_line(None),
        bedrock_line("FAILED1"),
        bedrock_line("RUNNING1"),
        bedrock_line("TOPK", top_k=3),
    )
    fmt, lines = read_lines(values, SERVED)
    items = _by_line(lines, {1: "DONE", 2: "DONE", 3: "FAILED", 4: "RUNNING"})
    items[2] = items[2].model_copy(update={"finish_reason": "length"})

    exported = output_records(fmt, lines, items, SERVED)

    assert exported.counts() == {"done": 2, "failed": 1, "invalid": 1, "unfinished": 1, "not_queued": 0}
    first, second = exported.output
    assert first == {
        "recordId": "DONE1",
        "modelInput": values[0][1]["modelInput"],
        "modelOutput": {
            "id": "msg_" + items[1].id,
            "type": "message",
            "role": "assistant",
            "model": SERVED,
            "content": [{"type": "text", "text": "Hi there."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 7, "output_tokens": 3},
        },
    }
    assert second["recordId"] == "00000000002"
    assert second["modelOutput"]["stop_reason"] == "max_tokens"
    failed, refused = exported.errors
    assert failed["recordId"] == "FAILED1"
    assert failed["error"]["errorCode"] == 500
    assert refused == {
        "recordId": "TOPK",
        "modelInput": values[4][1]["modelInput"],
        "error": {
            "errorCode": 400,
            "errorMessage": "line 5: modelInput.top_k: not supported: it would change the output",
        },
    }


def test_native_records_join_on_line_number() -> None:
    valid = {"task": "summarize", "text": "Boosting.", "options": {"max_tokens": 8}}
    fmt, lines = read_lines(numbered(valid, "nope", {**valid, "text": "Other."}), SERVED)
    items = _by_line(lines, {1: "DONE", 3: "FAILED"})

    exported = output_records(fmt, lines, items, SERVED)

    (done,) = exported.output
    assert (done["line"], done["status"], done["output"]) == (1, "DONE", "Hi there.")
    invalid, failed = exported.errors
    assert invalid == {
        "line": 2,
        "id": None,
        "error": {"type": "InvalidRequest", "message": "line 2: event must be a JSON object, got str"},
    }
    assert (failed["line"], failed["status"]) == (3, "FAILED")
