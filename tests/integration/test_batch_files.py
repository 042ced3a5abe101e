"""Batch files end to end against moto server and the tiny model: enqueue, a batch run, export, each caller id
answered exactly once, in OpenAI's and Bedrock's formats.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion as SdkChatCompletion
from openai.types.chat import completion_create_params

from handler.domain.requests import parse_request
from handler.entry.runtime import get_service
from handler.formats.batch_lines import read_lines
from handler.formats.jsonl import jsonl_values
from handler.storage.result_store import ResultStore
from handler.usecases import queued_work
from scripts.batch import enqueue as enqueue_script
from scripts.batch import export as export_results
from tests.support.batch_lines import MARKER, bedrock_line, openai_line
from tests.support.local_aws import Table

# -- end to end: enqueue, a batch run, export (moto server, the tiny model) ----------------------------


def _served(tiny_model: Path) -> str:
    return tiny_model.resolve().name.removesuffix(".gguf")


def _write_jsonl(path: Path, values: list[Any]) -> Path:
    path.write_text("\n".join(v if isinstance(v, str) else json.dumps(v) for v in values) + "\n", encoding="utf-8")
    return path


def _run_batch() -> None:
    """One batch run over everything queued, with the service the function builds from the environment."""
    summary = queued_work.run(get_service(), "test-run", deadline=time.monotonic() + 600)
    assert summary.left == 0


def _fail_one(table: Table, item_id: str) -> None:
    """Make one queued item FAILED, as a generation that failed for good leaves it."""
    store = ResultStore(table.name)
    assert store.leases.claim_queued(item_id, "failing-worker", 60) is not None
    store.leases.release(item_id, "failing-worker", "the engine failed", max_attempts=0)


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


def test_an_openai_batch_file_of_mixed_lines_comes_back_with_every_custom_id_once(
    service_env: Table, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an OpenAI Batch input file of valid lines and invalid ones (values carry the marker)
    served = _served(tiny_model)

    def line(custom_id: str | None, **body: Any) -> dict[str, Any]:
        return openai_line(custom_id, **{"model": served, **body})

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


def test_a_bedrock_batch_file_of_mixed_records_comes_back_with_every_record_id_once(
    service_env: Table, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a Bedrock batch file of valid records and invalid ones
    source = _write_jsonl(
        tmp_path / "records.jsonl",
        [
            bedrock_line("CALL0000001"),
            bedrock_line("CALL0000002", system="Be brief.", messages=[{"role": "user", "content": "Hello."}]),
            bedrock_line(None, messages=[{"role": "user", "content": "No id given."}]),
            f"[{MARKER}",
            bedrock_line("CALL0000001", messages=[{"role": "user", "content": MARKER}]),
            bedrock_line("CALL0000004", top_k=3),
            bedrock_line("CALL0000005", temperature=3),
            bedrock_line("CALL0000006", messages=[{"role": "user", "content": [{"type": "image", "x": MARKER}]}]),
            openai_line("an-openai-line"),
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
