"""The OpenAI-style routes with the openai SDK itself, in-process (the API's Lambda entry point behind an
httpx transport), against moto server: real text from the real test model, JSON output, OpenAI's errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import jsonschema
import openai
import pytest

from handler import engine as engine_module
from handler.entry import api
from handler.entry.runtime import get_service
from handler.usecases import queued_work
from tests.support.apigw import decode, proxy_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


def lambda_transport(request: httpx.Request) -> httpx.Response:
    """An HTTP request as API Gateway would pass it to the function, and the function's answer."""
    headers = {name: value for name, value in request.headers.items() if name not in ("content-length", "host")}
    body = request.content.decode("utf-8") if request.content else None
    event = proxy_event(
        request.method, request.url.path, body, content_type=headers.pop("content-type", None), headers=headers
    )
    answer = decode(api.lambda_handler(event, FakeLambdaContext()))
    return httpx.Response(answer.status, headers=answer.headers, json=answer.body)


@pytest.fixture
def client(service_env: Table, monkeypatch: pytest.MonkeyPatch) -> Iterator[openai.OpenAI]:
    monkeypatch.setenv("EXPECTED_PROMPT_TOKENS_PER_S", "5000")
    monkeypatch.setenv("EXPECTED_EVAL_TOKENS_PER_S", "5000")
    monkeypatch.setenv("API_BUDGET_S", "900")
    http = httpx.Client(transport=httpx.MockTransport(lambda_transport))
    yield openai.OpenAI(base_url="http://api.test/v1", api_key="unused", http_client=http, max_retries=0)
    http.close()


@pytest.fixture
def real_client(client: openai.OpenAI, real_model: Path, monkeypatch: pytest.MonkeyPatch) -> openai.OpenAI:
    """The client, served by the real instruct model (this test's own engine; the process's comes back after)."""
    monkeypatch.setenv("MODEL_PATH", str(real_model))
    monkeypatch.setattr(engine_module.process_engine, "engine", None)
    return client


def served_model() -> str:
    return get_service().settings.model_path.name.removesuffix(".gguf")


def test_the_sdk_gets_real_text_and_the_same_call_again_comes_from_the_table_without_the_model(
    real_client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages: Any = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name three colours of the rainbow."},
    ]

    first = real_client.chat.completions.create(model=served_model(), messages=messages, max_tokens=40)

    text = first.choices[0].message.content or ""
    assert first.object == "chat.completion"
    assert first.choices[0].finish_reason in ("stop", "length")
    assert len(text.split()) >= 3
    assert any(colour in text.lower() for colour in ("red", "orange", "yellow", "green", "blue", "violet"))
    assert first.usage is not None
    assert first.usage.completion_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    extension = (first.model_extra or {})["llm_service"]
    assert extension["cached"] is False
    assert first.id == "chatcmpl-" + extension["id"]

    # AND the same call again, in a process without the model, where loading it fails
    monkeypatch.setattr(engine_module.process_engine, "engine", None)
    monkeypatch.setattr(engine_module.process_engine, "load", lambda settings: pytest.fail("the model was loaded"))
    again = real_client.chat.completions.create(model=served_model(), messages=messages, max_tokens=40)

    assert again.choices[0].message.content == text
    assert (again.model_extra or {})["llm_service"]["cached"] is True
    assert again.id == first.id


def test_a_completion_is_the_same_stored_item_as_the_native_chat_request(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Say hello."}]
    completion = client.chat.completions.create(model=served_model(), messages=messages, max_tokens=4, seed=7)

    native = decode(
        api.lambda_handler(
            proxy_event("POST", "/chat", {"messages": messages, "options": {"max_tokens": 4, "seed": 7}}),
            FakeLambdaContext(),
        )
    )

    assert native.status == 200
    assert native.body["cached"] is True
    assert completion.id == "chatcmpl-" + native.body["id"]
    assert native.body["output"] == completion.choices[0].message.content


def test_json_schema_output_validates_against_the_schema(real_client: openai.OpenAI) -> None:
    completion = real_client.chat.completions.create(
        model=served_model(),
        messages=[{"role": "user", "content": "Describe a person named Ada as JSON."}],
        max_tokens=120,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    )

    value = json.loads(completion.choices[0].message.content or "")
    jsonschema.validate(value, PERSON)


def test_json_object_output_is_a_json_object(real_client: openai.OpenAI) -> None:
    completion = real_client.chat.completions.create(
        model=served_model(),
        messages=[{"role": "user", "content": "Describe a person named Ada as JSON."}],
        max_tokens=200,
        response_format={"type": "json_object"},
    )

    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}, "minimum at properties.*"),
        ({"type": "object", "not": {"required": ["x"]}}, "not at the top"),
        ({"type": "strin"}, "not a valid JSON schema"),
        ({"$ref": "https://example.com/schema.json"}, "grammar converter cannot handle this schema"),
    ],
    ids=["minimum", "not", "invalid", "remote-ref"],
)
def test_a_schema_the_grammar_cannot_enforce_is_a_clear_400(
    client: openai.OpenAI, service_env: Table, schema: dict[str, Any], named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=served_model(),
            messages=[{"role": "user", "content": "Hi."}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )

    assert refused.value.status_code == 400
    assert named in refused.value.message
    assert (refused.value.param or "").startswith("response_format")
    assert service_env.items() == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"n": 2}, "n"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"temperature": 5}, "temperature"),
    ],
    ids=["logprobs", "tools", "n", "frequency_penalty", "temperature-range"],
)
def test_a_field_that_would_change_the_output_and_is_not_honoured_is_refused_naming_it(
    client: openai.OpenAI, service_env: Table, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=served_model(), messages=[{"role": "user", "content": "Hi."}], **fields)

    assert refused.value.param == param
    assert param in refused.value.message
    assert refused.value.type == "invalid_request_error"
    assert service_env.items() == []


def test_harmless_fields_are_ignored(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=served_model(),
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi."}],
        max_completion_tokens=4,
        user="someone",
        metadata={"batch": "nightly"},
        store=True,
    )

    assert completion.choices[0].finish_reason in ("stop", "length")


def test_a_model_not_served_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi."}])

    assert refused.value.code == "model_not_found"
    assert served_model() in refused.value.message


def test_the_models_route_lists_the_served_model(client: openai.OpenAI) -> None:
    models = client.models.list()

    assert [model.id for model in models.data] == [served_model()]
    assert client.models.retrieve(served_model()).id == served_model()


def test_a_queued_completion_is_202_and_read_back_with_the_sdk_when_done(
    client: openai.OpenAI, lambda_context: FakeLambdaContext
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=served_model(),
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=4,
        extra_headers={"Prefer": "respond-async"},
    )
    queued_answer = raw.parse()

    assert raw.status_code == 202
    assert raw.headers["Location"] == f"/prod/v1/chat/completions/{queued_answer.id}"
    assert queued_answer.choices == []
    assert (queued_answer.model_extra or {})["llm_service"]["status"] == "PENDING"

    queued_work.run(get_service(), "test-run", deadline=time.monotonic() + 600)
    done = client.chat.completions.retrieve(queued_answer.id)

    assert done.id == queued_answer.id
    assert done.choices[0].finish_reason in ("stop", "length")


def test_errors_on_the_openai_routes_have_openai_s_shape(lambda_context: FakeLambdaContext, service_env: Table) -> None:
    malformed = decode(api.lambda_handler(proxy_event("POST", "/v1/chat/completions", "{not json"), lambda_context))
    unknown = decode(
        api.lambda_handler(proxy_event("GET", f"/v1/chat/completions/chatcmpl-{'a' * 64}"), lambda_context)
    )

    assert malformed.status == 400
    assert set(malformed.body["error"]) == {"message", "type", "param", "code"}
    assert malformed.body["error"]["code"] == "MalformedJson"
    assert unknown.status == 404
    assert unknown.body["error"]["type"] == "not_found_error"


def test_native_json_output_cut_off_by_max_tokens_is_refused_and_not_stored(
    service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    body = {
        "messages": [{"role": "user", "content": "Describe a person as JSON."}],
        "options": {"max_tokens": 3, "response_format": {"type": "json_schema", "json_schema": {"schema": PERSON}}},
    }

    answer = decode(api.lambda_handler(proxy_event("POST", "/chat", body), lambda_context))

    assert answer.status == 422, answer
    assert answer.body["error"]["type"] == "OutputInvalid"
    assert "max_tokens" in answer.body["error"]["message"]
    assert service_env.items() == []
