"""A batch file's lines in the formats callers have (handler/formats/batch_lines.py): the format told from the
first object, OpenAI Batch input and Bedrock records read into native requests, each invalid line named by its
fields and never its values; and a JSONL file read line by line (handler/formats/jsonl.py).
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from handler.formats.batch_lines import detect_format, read_lines
from handler.formats.batch_record import BatchLine
from handler.formats.jsonl import Unreadable, jsonl_values
from tests.support.batch_lines import MARKER, SERVED, bedrock_line, numbered, openai_line


def _problems(lines: list[BatchLine]) -> dict[int, str]:
    return {line.number: line.problem for line in lines if line.problem is not None}


# -- detecting the format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (openai_line("a"), "openai"),
        ({"custom_id": "a"}, "openai"),
        ({"body": {}}, "openai"),
        (bedrock_line("a"), "bedrock"),
        (bedrock_line(None), "bedrock"),
        ({"task": "summarize", "text": "x"}, "native"),
        ("not an object", "native"),
    ],
)
def test_a_lines_format_comes_from_its_keys(value: Any, expected: str) -> None:
    assert detect_format(value) == expected


def test_a_file_is_the_format_of_its_first_json_object_and_a_line_of_another_is_invalid() -> None:
    fmt, lines = read_lines(
        numbered(Unreadable("not JSON: x"), "a string", bedrock_line("R1"), openai_line("a")), SERVED
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
    fmt, (line,) = read_lines(numbered(openai_line("req-1", **body)), SERVED)

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
    values = numbered(
        openai_line("ok-1"),
        Unreadable("not JSON: Expecting value at column 1"),
        {**openai_line("url"), "url": f"/v1/embeddings?{MARKER}"},
        {**openai_line("method"), "method": f"GET {MARKER}"},
        openai_line(None),
        openai_line(""),
        openai_line("ok-1", messages=[{"role": "user", "content": MARKER}]),
        openai_line("logprobs", logprobs=True),
        openai_line("temperature", temperature=5),
        openai_line("model", model=f"gpt-4o-{MARKER}"),
        openai_line("unknown", **{f"x-{MARKER}": 1}),
        openai_line("image", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": MARKER}]}]),
        openai_line("role", messages=[{"role": f"{MARKER}", "content": "hi"}]),
        openai_line("stream", stream=True),
        {"custom_id": "nobody", "method": "POST", "url": "/v1/chat/completions", "body": MARKER},
        openai_line("ok-2"),
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
    fmt, (line,) = read_lines(numbered(bedrock_line("CALL0000001", **model_input)), SERVED)

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
    _, lines = read_lines(numbered(bedrock_line(None), bedrock_line("00000000001"), bedrock_line(None)), SERVED)

    assert [line.caller_id for line in lines] == ["00000000001R1", "00000000001", "00000000003"]
    assert _problems(lines) == {}


def test_each_invalid_bedrock_record_names_its_fields_never_its_values() -> None:
    values = numbered(
        bedrock_line("R1"),
        bedrock_line("R1", system=MARKER),
        bedrock_line(""),
        bedrock_line("TOPK", top_k=5),
        bedrock_line("TOOLS", tools=[{"name": MARKER}]),
        bedrock_line("TEMP", temperature=1.5),
        bedrock_line("IMAGE", messages=[{"role": "user", "content": [{"type": "image", "source": MARKER}]}]),
        bedrock_line("ROLE", messages=[{"role": "system", "content": MARKER}]),
        bedrock_line("NOMAX", max_tokens=None),
        bedrock_line("STOP", system="Be brief.", stop_sequences=[MARKER * 5]),
        bedrock_line("EMPTY", system="Be brief.", messages=[{"role": "user", "content": " "}]),
        bedrock_line("UNKNOWN", **{f"x-{MARKER}": 1}),
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
        numbered(valid, {**valid, "options": {"store": False}}, f"={MARKER}", openai_line("a")), SERVED
    )

    assert fmt == "native"
    assert lines[0].request == valid
    assert lines[0].caller_id is None
    problems = _problems(lines)
    assert problems[2].startswith("options.store: store: false writes nothing")
    assert problems[3] == "event must be a JSON object, got str"
    assert problems[4].startswith("a line of OpenAI Batch input, but this file is native requests")


def test_jsonl_values_reads_each_line_on_its_own() -> None:
    data = b'\xef\xbb\xbf{"a": 1}\r\n\r\nnot json\n{"b": "caf\xe9"}\n[1]'
    values = list(jsonl_values(io.BytesIO(data)))

    assert values == [
        (1, {"a": 1}),
        (3, Unreadable("not JSON: Expecting value at column 1")),
        (4, Unreadable("not valid UTF-8 (invalid byte at offset 10 of the line)")),
        (5, [1]),
    ]
