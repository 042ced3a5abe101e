"""Batch files in the formats callers have (handler/formats/batch_lines.py): OpenAI Batch input and Bedrock batch
records in, their output and error files out, joined on the caller's ids.

Unit tests read lines and write records without AWS; the end-to-end tests run the scripts against moto
server and the tiny model: enqueue, a batch run, export.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion as SdkChatCompletion
from openai.types.chat import completion_create_params

import enqueue as enqueue_script
import export_results
from conftest import Table
from handler.core.errors import StoreError
from handler.entry.runtime import get_service
from handler.formats.batch_lines import detect_format, read_lines
from handler.formats.batch_record import BatchLine
from handler.formats.jsonl import Unreadable, jsonl_values
from handler.formats.schemas import Metrics, ModelInfo, parse_request
from handler.storage.items import StoredItem
from handler.storage.table import ResultStore
from handler.usecases import queued
from handler.usecases.batch_export import output_records

#: Put into caller values below; no problem a line is reported with may contain it.
MARKER = "zq-batch-marker-7d2a"
SERVED = "tiny-phi3"


def _openai_line(custom_id: str | None, **body: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": SERVED, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, **body},
    }
    if custom_id is None:
        del line["custom_id"]
    return line


def _bedrock_line(record_id: str | None, **model_input: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "recordId": record_id,
        "modelInput": {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 4,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
            **model_input,
        },
    }
    if record_id is None:
        del line["recordId"]
    return line


def _numbered(*values: Any) -> list[tuple[int, Any]]:
    return list(enumerate(values, start=1))


def _problems(lines: list[BatchLine]) -> dict[int, str]:
    return {line.number: line.problem for line in lines if line.problem is not None}


# -- detecting the format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_openai_line("a"), "openai"),
        ({"custom_id": "a"}, "openai"),
        ({"body": {}}, "openai"),
        (_bedrock_line("a"), "bedrock"),
        (_bedrock_line(None), "bedrock"),
        ({"task": "summarize", "text": "x"}, "native"),
        ("not an object", "native"),
    ],
)
def test_a_lines_format_comes_from_its_keys(value: Any, expected: str) -> None:
    assert detect_format(value) == expected


def test_a_file_is_the_format_of_its_first_json_object_and_a_line_of_another_is_invalid() -> None:
    fmt, lines = read_lines(
        _numbered(Unreadable("not JSON: x"), "a string", _bedrock_line("R1"), _openai_line("a")), SERVED
    )

    assert fmt == "bedrock"
    assert _problems(lines) == {
        1: "not JSON: x",
        2: "not a JSON object: each line of Bedrock batch records is one",
        4: "a line of OpenAI Batch input, but this file is Bedrock batch records (from its line 3); "
        "a file holds one format",
    }
    assert lines[2].caller_id == "R1"
    assert lines[2].request is not None


# -- OpenAI Batch input ------------------------------------------------------------------------------


def test_openai_lines_become_the_native_requests_their_bodies_mean() -> None:
    body = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi."}]},
        ],
        "max_tokens": None,
        "max_completion_tokens": 16,
        "temperature": 0.5,
        "stop": "END",
        "seed": 3,
        "user": "ignored",
        "metadata": {"ignored": "too"},
    }
    fmt, (line,) = read_lines(_numbered(_openai_line("req-1", **body)), SERVED)

    assert fmt == "openai"
    assert line.problem is None
    assert line.caller_id == "req-1"
    assert line.request == {
        "task": "chat",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
        "options": {"max_tokens": 16, "temperature": 0.5, "seed": 3, "stop": ["END"]},
    }


def test_each_invalid_openai_line_names_its_fields_never_its_values_and_stops_nothing_else() -> None:
    # GIVEN an OpenAI Batch file whose values carry the marker, with one fault per line
    values = _numbered(
        _openai_line("ok-1"),
        Unreadable("not JSON: Expecting value at column 1"),
        {**_openai_line("url"), "url": f"/v1/embeddings?{MARKER}"},
        {**_openai_line("method"), "method": f"GET {MARKER}"},
        _openai_line(None),
        _openai_line(""),
        _openai_line("ok-1", messages=[{"role": "user", "content": MARKER}]),
        _openai_line("logprobs", logprobs=True),
        _openai_line("temperature", temperature=5),
        _openai_line("model", model=f"gpt-4o-{MARKER}"),
        _openai_line("unknown", **{f"x-{MARKER}": 1}),
        _openai_line("image", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": MARKER}]}]),
        _openai_line("role", messages=[{"role": f"{MARKER}", "content": "hi"}]),
        _openai_line("stream", stream=True),
        {"custom_id": "nobody", "method": "POST", "url": "/v1/chat/completions", "body": MARKER},
        _openai_line("ok-2"),
    )

    # WHEN the file is read
    _, lines = read_lines(values, SERVED)

    # THEN every invalid line is named by its fields, the valid ones are read, and the marker is nowhere
    problems = _problems(lines)
    assert problems == {
        2: "not JSON: Expecting value at column 1",
        3: "url: only /v1/chat/completions is served here",
        4: "method: must be POST",
        5: "custom_id: required",
        6: "custom_id: must be a non-empty string",
        7: "custom_id: repeats the one of line 1 (each line's custom_id must be unique in a file)",
        8: "body.logprobs: not supported: it would change the output",
        9: "body.temperature: Input should be less than or equal to 2",
        10: f"body.model: not the model served here, {SERVED!r} (GET /v1/models)",
        11: "body.<unknown field>: not supported: it would change the output",
        12: "body.messages.0.content: only text parts are read",
        13: "body.messages.0.role: Input should be 'system', 'user' or 'assistant'",
        14: "body.stream: not supported in a batch: its answers are written whole to the output file; send false",
        15: "body: must be a JSON object (a chat completion request)",
    }
    assert all(MARKER not in problem for problem in problems.values())
    assert [line.caller_id for line in lines if line.problem is None] == ["ok-1", "ok-2"]
    # AND a repeated or missing custom_id is no caller id (each id is reported once); the others are kept
    assert [line.caller_id for line in lines[4:7]] == [None, None, None]
    assert lines[7].caller_id == "logprobs"
    # AND a body the endpoint refuses is typed as its answer; a line that is no Batch request is not
    assert (lines[8].status, lines[8].code, lines[8].param) == (400, "InvalidRequest", "temperature")
    assert (lines[9].status, lines[9].code, lines[9].param) == (404, "model_not_found", "model")
    assert (lines[10].status, lines[10].param) == (400, None)  # an unknown field's name is the caller's text
    assert (lines[2].status, lines[2].code) == (None, "invalid_url")


# -- Bedrock batch records ---------------------------------------------------------------------------


def test_bedrock_records_become_native_chat_requests_with_the_system_prompt_first() -> None:
    model_input = {
        "system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief.", "cache_control": {}}],
        "messages": [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
            {"role": "user", "content": "Again."},
        ],
        "max_tokens": 12,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "ignored"},
    }
    fmt, (line,) = read_lines(_numbered(_bedrock_line("CALL0000001", **model_input)), SERVED)

    assert fmt == "bedrock"
    assert line.problem is None
    assert line.caller_id == "CALL0000001"
    assert line.request == {
        "task": "chat",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Again."},
        ],
        "options": {"max_tokens": 12, "temperature": 0.2, "top_p": 0.9, "stop": ["END"]},
    }


def test_a_bedrock_record_without_a_record_id_gets_one_as_bedrock_adds_one_never_a_given_one() -> None:
    _, lines = read_lines(_numbered(_bedrock_line(None), _bedrock_line("00000000001"), _bedrock_line(None)), SERVED)

    assert [line.caller_id for line in lines] == ["00000000001R1", "00000000001", "00000000003"]
    assert _problems(lines) == {}


def test_each_invalid_bedrock_record_names_its_fields_never_its_values() -> None:
    values = _numbered(
        _bedrock_line("R1"),
        _bedrock_line("R1", system=MARKER),
        _bedrock_line(""),
        _bedrock_line("TOPK", top_k=5),
        _bedrock_line("TOOLS", tools=[{"name": MARKER}]),
        _bedrock_line("TEMP", temperature=1.5),
        _bedrock_line("IMAGE", messages=[{"role": "user", "content": [{"type": "image", "source": MARKER}]}]),
        _bedrock_line("ROLE", messages=[{"role": "system", "content": MARKER}]),
        _bedrock_line("NOMAX", max_tokens=None),
        _bedrock_line("STOP", system="Be brief.", stop_sequences=[MARKER * 5]),
        _bedrock_line("EMPTY", system="Be brief.", messages=[{"role": "user", "content": " "}]),
        _bedrock_line("UNKNOWN", **{f"x-{MARKER}": 1}),
        {"recordId": "NOINPUT"},
        {"recordId": "TEXT", "modelInput": MARKER},
    )

    _, lines = read_lines(values, SERVED)

    problems = _problems(lines)
    assert problems == {
        2: "recordId: repeats the one of line 1 (each line's recordId must be unique in a file)",
        3: "recordId: must be a non-empty string",
        4: "modelInput.top_k: not supported: it would change the output",
        5: "modelInput.tools: not supported: it would change the output",
        6: "modelInput.temperature: Input should be less than or equal to 1",
        7: "modelInput.messages.0.content.0: only text blocks ({type: text, text}) are read",
        8: "modelInput.messages.0.role: Input should be 'user' or 'assistant'",
        9: "modelInput.max_tokens: Input should be a valid integer",
        10: "modelInput.stop_sequences.0: String should have at most 64 characters",
        11: "modelInput.messages.0.content: Value error, must not be empty or only whitespace",
        12: "modelInput.<unknown field>: not supported: it would change the output",
        13: "modelInput: required",
        14: "modelInput: must be a JSON object (an Anthropic Messages request)",
    }
    assert all(MARKER not in problem for problem in problems.values())
    assert all(line.status in (None, 400) for line in lines)


# -- native requests ---------------------------------------------------------------------------------


def test_native_lines_are_checked_as_the_service_checks_them() -> None:
    valid = {"task": "summarize", "text": "Boosting.", "options": {"max_tokens": 8}}
    fmt, lines = read_lines(
        _numbered(valid, {**valid, "options": {"store": False}}, f"={MARKER}", _openai_line("a")), SERVED
    )

    assert fmt == "native"
    assert lines[0].request == valid
    assert lines[0].caller_id is None
    problems = _problems(lines)
    assert problems[2].startswith("options.store: store: false writes nothing")
    assert problems[3] == "event must be a JSON object, got str"
    assert problems[4].startswith("a line of OpenAI Batch input, but this file is native requests")


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
    values = _numbered(
        _openai_line("done"),
        _openai_line("failed"),
        _openai_line("pending"),
        _openai_line("unqueued"),
        _openai_line("bad-temperature", temperature=9),
        {**_openai_line("bad-url"), "url": "/v1/responses"},
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
    values = _numbered(
        _bedrock_line("DONE1"),
        _bedrock_line(None),
        _bedrock_line("FAILED1"),
        _bedrock_line("RUNNING1"),
        _bedrock_line("TOPK", top_k=3),
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
    fmt, lines = read_lines(_numbered(valid, "nope", {**valid, "text": "Other."}), SERVED)
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


def test_jsonl_values_reads_each_line_on_its_own() -> None:
    data = b'\xef\xbb\xbf{"a": 1}\r\n\r\nnot json\n{"b": "caf\xe9"}\n[1]'
    values = list(jsonl_values(io.BytesIO(data)))

    assert values == [
        (1, {"a": 1}),
        (3, Unreadable("not JSON: Expecting value at column 1")),
        (4, Unreadable("not valid UTF-8 (invalid byte at offset 10 of the line)")),
        (5, [1]),
    ]


# -- end to end: enqueue, a batch run, export (moto server, the tiny model) ----------------------------


def _served(tiny_model: Path) -> str:
    return tiny_model.resolve().name.removesuffix(".gguf")


def _write_jsonl(path: Path, values: list[Any]) -> Path:
    path.write_text("\n".join(v if isinstance(v, str) else json.dumps(v) for v in values) + "\n", encoding="utf-8")
    return path


def _run_batch() -> None:
    """One batch run over everything queued, with the service the function builds from the environment."""
    summary = queued.run(get_service(), "test-run", deadline=time.monotonic() + 600)
    assert summary.left == 0


def _fail_one(table: Table, item_id: str) -> None:
    """Make one queued item FAILED, as a generation that failed for good leaves it."""
    store = ResultStore(table.name)
    assert store.claim(item_id, "failing-worker", 60) is not None
    store.release(item_id, "failing-worker", "the engine failed", max_attempts=0)


def _enqueue(source: Path, table: Table, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = enqueue_script.main([str(source), "--table", table.name, "--model", str(tiny_model)])
    return code, capsys.readouterr().out


def _export(
    source: Path, table: Table, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    out, errors = tmp_path / "output.jsonl", tmp_path / "errors.jsonl"
    argv = ["--table", table.name, "--model", str(tiny_model), "--input", str(source), "--out", str(out)]
    assert export_results.main([*argv, "--errors", str(errors)]) == 0
    read = [[json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] for path in (out, errors)]
    return read[0], read[1], capsys.readouterr().out


def _reported(output: str) -> dict[int, str]:
    lines = [line.strip() for line in output.splitlines() if line.startswith("  line ")]
    return {int(line.split()[1].rstrip(":")): line.split(": ", 1)[1] for line in lines}


def _request_ids(source: Path, served: str) -> dict[int, str]:
    """The request id of each valid line of a batch file, by line number, as the service computes it."""
    with source.open("rb") as handle:
        _, lines = read_lines(jsonl_values(handle), served)
    service = get_service()
    return {line.number: service.request_id(parse_request(line.request)) for line in lines if line.request}


def _error_message(record: dict[str, Any]) -> str:
    """An OpenAI error line's message: its own error's, or its response body's."""
    error = record["error"] or record["response"]["body"]["error"]
    return str(error["message"])


@pytest.mark.integration
def test_an_openai_batch_file_of_mixed_lines_comes_back_with_every_custom_id_once(
    service_env: Table, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an OpenAI Batch input file of valid lines and invalid ones (values carry the marker)
    served = _served(tiny_model)

    def line(custom_id: str | None, **body: Any) -> dict[str, Any]:
        return _openai_line(custom_id, **{"model": served, **body})

    source = _write_jsonl(
        tmp_path / "batch.jsonl",
        [
            line("req-1"),
            line("req-2", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]),
            f"{{not json {MARKER}",
            {**line("req-url"), "url": f"/v1/embeddings/{MARKER}"},
            line(None),
            line("req-1", messages=[{"role": "user", "content": MARKER}]),
            line("req-logprobs", logprobs=True),
            line("req-temperature", temperature=7),
            line("req-failing", messages=[{"role": "user", "content": "This one fails."}]),
            line("req-3", seed=4, max_completion_tokens=4, max_tokens=None),
            line("req-too-long", max_tokens=4096),
        ],
    )

    # WHEN it is enqueued
    code, enqueued = _enqueue(source, service_env, tiny_model, capsys)

    # THEN each invalid line is reported by its number and fields, never its content, and the rest queued
    assert code == 1
    assert "format: OpenAI Batch input" in enqueued
    reported = _reported(enqueued)
    too_long_report = reported.pop(11)
    assert reported == {
        3: "not JSON: Expecting property name enclosed in double quotes at column 2",
        4: "url: only /v1/chat/completions is served here",
        5: "custom_id: required",
        6: "custom_id: repeats the one of line 1 (each line's custom_id must be unique in a file)",
        7: "body.logprobs: not supported: it would change the output",
        8: "body.temperature: Input should be less than or equal to 2",
    }
    assert too_long_report.startswith("input is ")  # counted in tokens: the model file was given
    assert MARKER not in enqueued
    assert "new: 4" in enqueued

    # WHEN one request fails for good, a batch run finishes the others, and the file is exported
    _fail_one(service_env, _request_ids(source, served)[9])
    _run_batch()
    output, errors, printed = _export(source, service_env, tiny_model, tmp_path, capsys)

    # THEN every custom_id of the file is in the output or the error file, once
    assert "done: 3  failed: 1  invalid: 7  unfinished: 0  not queued: 0" in printed
    ids = Counter(record["custom_id"] for record in output + errors)
    assert ids == Counter(
        [
            *("req-1", "req-2", "req-3", "req-url", "req-logprobs", "req-temperature", "req-failing"),
            *("req-too-long", None, None, None),
        ]
    )
    assert [record["custom_id"] for record in output] == ["req-1", "req-2", "req-3"]
    # AND each output line is a chat completion the SDK reads, of the request its request id names
    for record in output:
        completion = SdkChatCompletion.model_validate(record["response"]["body"])
        assert completion.choices[0].message.content
        assert completion.id == "chatcmpl-" + record["response"]["request_id"]
        assert record["error"] is None
    # AND the error lines say why, by line and field, never quoting the line
    messages = {record["custom_id"]: _error_message(record) for record in errors if record["custom_id"]}
    assert messages["req-failing"] == "the request failed: the engine failed"
    assert messages["req-temperature"] == "line 8: body.temperature: Input should be less than or equal to 2"
    assert messages["req-too-long"].startswith("line 11: input is ")
    too_long = next(record for record in errors if record["custom_id"] == "req-too-long")
    assert too_long["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert all(MARKER not in _error_message(record) for record in errors)


@pytest.mark.integration
def test_a_bedrock_batch_file_of_mixed_records_comes_back_with_every_record_id_once(
    service_env: Table, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a Bedrock batch file of valid records and invalid ones
    source = _write_jsonl(
        tmp_path / "records.jsonl",
        [
            _bedrock_line("CALL0000001"),
            _bedrock_line("CALL0000002", system="Be brief.", messages=[{"role": "user", "content": "Hello."}]),
            _bedrock_line(None, messages=[{"role": "user", "content": "No id given."}]),
            f"[{MARKER}",
            _bedrock_line("CALL0000001", messages=[{"role": "user", "content": MARKER}]),
            _bedrock_line("CALL0000004", top_k=3),
            _bedrock_line("CALL0000005", temperature=3),
            _bedrock_line("CALL0000006", messages=[{"role": "user", "content": [{"type": "image", "x": MARKER}]}]),
            _openai_line("an-openai-line"),
        ],
    )

    # WHEN it is enqueued, run and exported
    code, enqueued = _enqueue(source, service_env, tiny_model, capsys)
    assert code == 1
    assert "format: Bedrock batch records" in enqueued
    assert sorted(_reported(enqueued)) == [4, 5, 6, 7, 8, 9]
    assert MARKER not in enqueued
    _run_batch()
    output, errors, printed = _export(source, service_env, tiny_model, tmp_path, capsys)

    # THEN every record id is in the output or the error file, once; lines without a usable id have none
    assert "done: 3  failed: 0  invalid: 6" in printed
    ids = Counter(record["recordId"] for record in output + errors)
    assert ids == Counter(
        ["CALL0000001", "CALL0000002", "00000000003", "CALL0000004", "CALL0000005", "CALL0000006", None, None, None]
    )
    # AND each output record echoes its modelInput with an Anthropic Messages response
    for record in output:
        message = record["modelOutput"]
        assert message["type"] == "message"
        assert message["role"] == "assistant"
        assert message["content"][0]["type"] == "text"
        assert message["stop_reason"] in ("end_turn", "max_tokens")
        assert message["usage"]["output_tokens"] > 0
        assert record["modelInput"]["anthropic_version"] == "bedrock-2023-05-31"
    assert all(record["error"]["errorCode"] == 400 for record in errors)
    assert all(MARKER not in record["error"]["errorMessage"] for record in errors)


@pytest.mark.integration
def test_an_openai_batch_written_with_the_sdks_types_reads_back_as_sdk_chat_completions(
    service_env: Table, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an OpenAI Batch input file whose bodies are the SDK's own request type
    served = _served(tiny_model)
    questions = ["What is a tree?", "What is a forest?"]
    bodies: list[completion_create_params.CompletionCreateParamsNonStreaming] = [
        {
            "model": served,
            "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}],
            "max_completion_tokens": 4,
            "seed": 1,
        }
        for question in questions
    ]
    lines = [
        {"custom_id": f"q-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for n, body in enumerate(bodies)
    ]
    source = _write_jsonl(tmp_path / "sdk-batch.jsonl", lines)
    assert _enqueue(source, service_env, tiny_model, capsys)[0] == 0

    # WHEN it is exported before the batch runs, then after
    before, before_errors, printed = _export(source, service_env, tiny_model, tmp_path, capsys)
    _run_batch()
    after, after_errors, _ = _export(source, service_env, tiny_model, tmp_path, capsys)

    # THEN nothing unfinished is in either file, and then every line is an SDK chat completion
    assert (before, before_errors) == ([], [])
    assert "unfinished: 2" in printed
    assert after_errors == []
    assert [record["custom_id"] for record in after] == ["q-0", "q-1"]
    completions = [SdkChatCompletion.model_validate(record["response"]["body"]) for record in after]
    assert all(completion.model == served for completion in completions)
    assert all(completion.choices[0].finish_reason in ("stop", "length") for completion in completions)


@pytest.mark.integration
def test_get_many_reads_items_by_id_without_a_scan(service_env: Table, tiny_model: Path) -> None:
    store = ResultStore(service_env.name)
    ids = [f"{n:064x}" for n in range(150)]
    store.put_pending_batch([(item_id, {"task": "chat", "request": {"n": n}}) for n, item_id in enumerate(ids)])

    items = store.get_many([*ids[:120], "f" * 64, ids[0]])

    assert sorted(items) == sorted(ids[:120])
    assert items[ids[7]].request == {"n": 7}
    assert store.statuses(ids[:3]) == dict.fromkeys(ids[:3], "PENDING")


class _BatchGetClient:
    """A DynamoDB client that answers BatchGetItem in scripted rounds: (items read, keys left unprocessed)."""

    def __init__(self, table: str, rounds: list[tuple[int, int]]) -> None:
        self.table, self.rounds, self.calls = table, rounds, 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 (boto3's name)
        keys = RequestItems[self.table]["Keys"]
        read, left = self.rounds[min(self.calls, len(self.rounds) - 1)]
        self.calls += 1
        items = [{"id": key["id"], "status": "DONE"} for key in keys[:read]]
        unprocessed = {self.table: {**RequestItems[self.table], "Keys": keys[read : read + left]}} if left else {}
        return {"Responses": {self.table: items}, "UnprocessedKeys": unprocessed}


class _FakeTable:
    def __init__(self, client: _BatchGetClient) -> None:
        self.meta = type("Meta", (), {"client": client})()


def test_get_many_reads_again_what_a_full_response_left_and_backs_off_only_when_nothing_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("handler.storage.table.time.sleep", sleeps.append)
    ids = [f"{n:064x}" for n in range(10)]

    # A response stops at 16 MB: each round reads some and leaves the rest; no backoff is needed
    client = _BatchGetClient("t", [(3, 7), (3, 4), (3, 1), (1, 0)])
    assert sorted(ResultStore("t", table=_FakeTable(client)).get_many(ids)) == ids
    assert (client.calls, sleeps) == (4, [])

    # Throttled: rounds that read nothing back off, and give up after the attempts
    client = _BatchGetClient("t", [(2, 8), (0, 8)])
    with pytest.raises(StoreError, match="left keys unread after 6 attempts"):
        ResultStore("t", table=_FakeTable(client)).get_many(ids)
    assert client.calls == 7
    assert len(sleeps) == 5
