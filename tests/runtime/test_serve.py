"""`make serve` end to end: the openai SDK streams from the API served through the function's own streaming
runtime (a child process, against a local Runtime API), with the real test model and a local table; and the front
does what API Gateway does for the files routes: every method reaches the function, uploads arrive base64-encoded,
each API key is an owner of its own."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import openai
import pytest

from handler.core.settings import settings_from
from scripts.local import serve
from tests.support.local_aws import Table

QUESTION: Any = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def local(real_model: Path) -> Iterator[serve.LocalApi]:
    with serve.LocalApi(real_model, env={"N_THREADS": "2"}) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(local: serve.LocalApi) -> Iterator[openai.OpenAI]:
    http = httpx.Client(timeout=600)
    yield openai.OpenAI(base_url=f"{local.base_url}/v1", api_key="unused", http_client=http, max_retries=0)
    http.close()


def _model(real_model: Path) -> str:
    return settings_from({"MODEL_PATH": str(real_model)}).model_path.name.removesuffix(".gguf")


def test_the_sdk_streams_through_the_streaming_runtime_before_the_generation_ends(
    local: serve.LocalApi, sdk: openai.OpenAI, real_model: Path
) -> None:
    table = Table(serve.TABLE, local.table_endpoint)
    stream = sdk.chat.completions.create(model=_model(real_model), messages=QUESTION, max_tokens=64, stream=True)
    contents: list[str] = []
    status_at_first_text = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if not contents:
                # The order of events: the first text reached the client while its item was still being generated.
                [item] = table.items()
                status_at_first_text = item["status"]
            contents.append(chunk.choices[0].delta.content)
    assert status_at_first_text == "RUNNING"
    assert len(contents) > 1
    [item] = table.items()
    assert item["status"] == "DONE"
    assert "".join(contents) == item["output"]
    # AND the same request again streams from the table, with its usage
    again = list(
        sdk.chat.completions.create(
            model=_model(real_model),
            messages=QUESTION,
            max_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in again if c.choices) == item["output"]
    finish = next(c for c in again if c.choices and c.choices[0].finish_reason)
    assert finish.model_extra is not None
    assert finish.model_extra["llm_service"]["cached"] is True
    assert again[-1].usage is not None


def test_a_request_without_streaming_is_answered_whole_through_the_same_runtime(
    sdk: openai.OpenAI, real_model: Path
) -> None:
    models = sdk.models.list()
    assert [model.id for model in models.data] == [_model(real_model)]
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


def send(
    local: serve.LocalApi, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    """One request as it is sent; the status, headers and JSON answer."""
    connection = http.client.HTTPConnection("127.0.0.1", urlsplit(local.base_url).port, timeout=120)
    try:
        connection.request(method, path, body or None, headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), json.loads(answer.read() or b"null")
    finally:
        connection.close()


def test_delete_put_and_patch_reach_the_function_which_answers_them_itself(local: serve.LocalApi) -> None:
    # A route of POST only: the function's 405 with Allow, not an answer of the front's own
    for method in ("DELETE", "PUT", "PATCH"):
        status, headers, body = send(local, method, "/chat", {"Content-Type": "application/json"}, b"{}")
        assert (status, headers.get("Allow")) == (405, "POST"), body
        assert body["error"]["type"] == "MethodNotAllowed"
    # A DELETE of a file that is not there: the function's 404, in OpenAI's shape
    status, _, body = send(local, "DELETE", "/v1/files/file-0123456789abcdef", {"Authorization": "Bearer a-key"})
    assert status == 404
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_an_upload_reaches_the_function_base64_encoded_and_comes_back_byte_for_byte(
    local: serve.LocalApi, sdk: openai.OpenAI, real_model: Path
) -> None:
    # GIVEN a batch file with text beyond ASCII (a body read as text and written back would not survive whole)
    line = {
        "custom_id": "übersetzung-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": _model(real_model), "messages": [{"role": "user", "content": "日本語で «こんにちは»"}]},
    }
    data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
    # THEN the event of a multipart request carries its body base64-encoded, as API Gateway's binary media types do
    multipart = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    event = serve.proxy_event("POST", "/v1/files", multipart, data)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == data
    text_event = serve.proxy_event("POST", "/v1/batches", {"content-type": "application/json"}, b'{"a": "\xc3\xa9"}')
    assert (text_event["isBase64Encoded"], text_event["body"]) == (False, '{"a": "\u00e9"}')
    # AND an upload through the SDK comes back as it was sent
    uploaded = sdk.files.create(file=("lines.jsonl", data, "application/jsonl"), purpose="batch")
    assert (uploaded.filename, uploaded.bytes, uploaded.purpose) == ("lines.jsonl", len(data), "batch")
    assert sdk.files.content(uploaded.id).content == data


def test_each_api_key_is_an_owner_of_its_own_and_no_key_is_nobody(
    local: serve.LocalApi, sdk: openai.OpenAI, real_model: Path
) -> None:
    # The key's id, never the key: one id per key, whichever header carries it
    key_ids = {
        serve.api_key_id({"Authorization": "Bearer key-one"}),
        serve.api_key_id({"x-api-key": "key-one"}),
        serve.api_key_id({"X-API-Key": "key-one", "Authorization": "Bearer key-two"}),
    }
    assert len(key_ids) == 1
    assert serve.api_key_id({"authorization": "bearer key-two"}) not in key_ids
    assert serve.api_key_id({}) is None
    assert serve.api_key_id({"Authorization": "Basic a2V5LW9uZQ=="}) is None
    event = serve.proxy_event("GET", "/v1/files", {"Authorization": "Bearer key-one"}, b"")
    assert event["requestContext"]["identity"]["apiKeyId"] in key_ids
    assert "key-one" not in json.dumps(event["requestContext"])  # the headers carry it, as they do deployed
    assert "apiKeyId" not in serve.proxy_event("GET", "/v1/files", {}, b"")["requestContext"]["identity"]

    # GIVEN a file uploaded with the SDK's key
    chat_body = {"model": _model(real_model), "messages": QUESTION, "max_tokens": 4}
    data = json.dumps({"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": chat_body}).encode()
    uploaded = sdk.files.create(file=("owned.jsonl", data, "application/jsonl"), purpose="batch")
    # THEN the same key through API Gateway's own header reads it
    status, _, body = send(local, "GET", f"/v1/files/{uploaded.id}", {"x-api-key": "unused"})
    assert (status, body["id"]) == (200, uploaded.id)
    # AND another key does not see it, and a request without a key is refused
    with httpx.Client(timeout=120) as http:
        other = openai.OpenAI(base_url=f"{local.base_url}/v1", api_key="another", http_client=http, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(uploaded.id)
        assert uploaded.id not in [listed.id for listed in other.files.list()]
    assert uploaded.id in [listed.id for listed in sdk.files.list()]
    status, _, body = send(local, "GET", f"/v1/files/{uploaded.id}")
    assert status == 401, body
