"""`make serve` end to end: the openai SDK streams from the API served through the function's own streaming
runtime (a child process, against a local Runtime API), with the real test model and a local table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
