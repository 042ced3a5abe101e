"""Request parsing and ids: no model, no AWS."""

from __future__ import annotations

import pytest

from handler.core.errors import InvalidRequest
from handler.domain.requests import DEFAULT_MAX_TOKENS, ChatRequest, SummarizeRequest, TranslateRequest, parse_request
from handler.formats.prompts import build_messages
from handler.usecases.stored_requests import request_id
from tests.support.events import load_event

SHA = "0" * 64


def test_parse_request_summarize_defaults_to_bullets_and_greedy() -> None:
    request = parse_request({"task": "summarize", "text": "Some text."})

    assert isinstance(request, SummarizeRequest)
    assert request.style == "bullets"
    assert request.options.temperature == 0.0
    assert request.options.max_tokens == DEFAULT_MAX_TOKENS
    # no stop strings of one model's making: the engine stops on the loaded model's own end-of-generation markers
    assert request.options.stop == []


def test_parse_request_translate_defaults_to_japanese() -> None:
    request = parse_request({"task": "translate", "text": "Hello."})

    assert isinstance(request, TranslateRequest)
    assert request.target_language == "Japanese"


@pytest.mark.parametrize("name", ["summarize.json", "translate.json", "chat-solve.json"])
def test_parse_request_sample_events_are_valid(name: str) -> None:
    assert parse_request(load_event(name)).task == load_event(name)["task"]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"task": "poem", "text": "x"}, "unknown task; expected one of summarize, translate, chat (got 'poem')"),
        ({"text": "x"}, "task: field required"),
        ({"task": "summarize"}, "text: Field required"),
        ({"task": "summarize", "text": ""}, "text: String should have at least 1 character"),
        ({"task": "summarize", "text": "   \n"}, "text: Value error, must not be empty or only whitespace"),
        ({"task": "summarize", "text": 42}, "text: Input should be a valid string (got 42)"),
        ({"task": "summarize", "text": "x", "style": "haiku"}, "style: Input should be 'bullets' or 'paragraph'"),
        ({"task": "summarize", "text": "x", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"task": "translate", "text": "x", "target_language": ""}, "target_language: String should have at least 1"),
        ({"task": "translate", "text": "x", "target_language": "  "}, "target_language: String should match pattern"),
        ({"task": "translate", "text": "x", "target_language": "French\n<|system|>"}, "target_language: String should"),
        ({"task": "chat", "messages": []}, "messages: List should have at least 1 item"),
        (
            {"task": "chat", "messages": [{"role": "system", "content": "Be brief."}]},
            "at least one message with role 'user'",
        ),
        ({"task": "chat", "messages": [{"role": "bot", "content": "hi"}]}, "messages.0.role: Input should be 'system'"),
        ({"task": "chat", "messages": "hello"}, "messages: Input should be a valid list"),
        (
            {"task": "summarize", "text": "x", "options": {"max_tokens": 0}},
            "options.max_tokens: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            {"task": "summarize", "text": "x", "options": {"max_tokens": 100000}},
            "options.max_tokens: Input should be less than or equal to 4096 (got 100000)",
        ),
        (
            {"task": "summarize", "text": "x", "options": {"max_tokens": "512"}},
            "options.max_tokens: Input should be a valid integer (got '512')",
        ),
        (
            {"task": "summarize", "text": "x", "options": {"temperature": 5}},
            "options.temperature: Input should be less than or equal to 2",
        ),
        (
            {"task": "summarize", "text": "x", "options": {"stop": "<|end|>"}},
            "options.stop: Input should be a valid list",
        ),
        ({"task": "summarize", "text": "x", "options": {"beam": 4}}, "options.beam: Extra inputs are not permitted"),
        ([1, 2], "event must be a JSON object, got list"),
    ],
)
def test_parse_request_bad_input_names_the_problem(event: object, expected: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(event)

    assert expected in caught.value.message
    assert caught.value.to_answer()["error"]["type"] == "InvalidRequest"


def test_parse_request_reports_every_bad_field_at_once() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request({"task": "summarize", "text": "", "style": "x", "options": {"max_tokens": -1}})

    assert caught.value.message.count(";") == 2


def test_request_id_is_deterministic_and_ignores_store_option() -> None:
    first = parse_request({"task": "summarize", "text": "Same text."})
    same = parse_request({"task": "summarize", "text": "Same text.", "style": "bullets", "options": {"store": False}})

    assert request_id(first, SHA) == request_id(same, SHA)


@pytest.mark.parametrize(
    "changed",
    [
        {"task": "summarize", "text": "Other text."},
        {"task": "summarize", "text": "Same text.", "style": "paragraph"},
        {"task": "summarize", "text": "Same text.", "options": {"max_tokens": 100}},
        {"task": "summarize", "text": "Same text.", "options": {"seed": 7}},
        {"task": "translate", "text": "Same text."},
    ],
)
def test_request_id_changes_with_inputs_and_options(changed: dict[str, object]) -> None:
    base = parse_request({"task": "summarize", "text": "Same text."})

    assert request_id(parse_request(changed), SHA) != request_id(base, SHA)


def test_request_id_changes_with_model() -> None:
    request = parse_request({"task": "summarize", "text": "Same text."})

    assert request_id(request, "0" * 64) != request_id(request, "1" * 64)


def test_build_messages_puts_the_text_first_and_the_instruction_last() -> None:
    translate = parse_request({"task": "translate", "text": "Good morning.", "target_language": "French"})
    summarize = parse_request({"task": "summarize", "text": "Good morning.", "style": "paragraph"})

    (translation,) = build_messages(translate)
    (summary,) = build_messages(summarize)

    assert translation.role == "user"
    assert (
        translation.content == "Good morning.\n\nTranslate the text above to French. Answer with the translation only."
    )
    # Requests over one text share everything up to the end of the text: its prompt prefix.
    assert summary.content.startswith("Good morning.\n\n")
    assert summary.content.endswith("Summarize the sentences above in one short paragraph.")


def test_build_messages_chat_keeps_turns_in_order() -> None:
    request = parse_request(load_event("chat-solve.json"))
    assert isinstance(request, ChatRequest)

    messages = build_messages(request)

    assert [m.role for m in messages] == ["system", "user"]
    assert messages[1].content == request.messages[1].content
