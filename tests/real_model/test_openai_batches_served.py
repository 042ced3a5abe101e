"""OpenAI's Files and Batches API through the real openai SDK against `make serve` (scripts/local/serve.py) with the
real small model: a batch of the three seed tasks completes through the scheduled runs, its output file's lines
parse with the SDK's types and carry the table's texts; another API key sees none of it; a cancelled batch stops
queuing its lines."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai.types import Batch, BatchRequestCounts, FileObject
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict

from scripts.local import serve
from scripts.repository import ROOT
from tests.support.local_aws import Table

#: Seconds between scheduled runs: short, so that a batch ends soon after its lines are generated.
SCHEDULE_EVERY_S = 2
#: A bound on the wait for a batch to end; a batch that does not end fails the test with its last state.
BATCH_WAIT_S = 300
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
#: Few tokens each: the test is about the batch's course, not the texts' length.
MAX_TOKENS = 24


class OutputResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status_code: int
    request_id: str | None
    body: dict[str, Any]


class OutputLine(BaseModel):
    """A line of a batch's output file, as OpenAI documents it (the SDK has no type for it)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    custom_id: str
    response: OutputResponse | None
    error: dict[str, Any] | None


def unique(name: str) -> str:
    """A name of this API's own: moto keeps one state per process, and a scheduled run reads every open batch."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def served_api(real_model: Path, **env: str) -> serve.LocalApi:
    return serve.LocalApi(
        real_model,
        env={"N_THREADS": "2", **env},
        table_name=unique(serve.TABLE),
        bucket_name=unique(serve.BUCKET),
        schedule_every_s=SCHEDULE_EVERY_S,
    )


@pytest.fixture(scope="module")
def local(real_model: Path) -> Iterator[serve.LocalApi]:
    with served_api(real_model) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120) as client:
        yield client


def sdk(local: serve.LocalApi, http: httpx.Client, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{local.base_url}/v1", api_key=api_key, http_client=http, max_retries=0)


@pytest.fixture(scope="module")
def owner(local: serve.LocalApi, http: httpx.Client) -> openai.OpenAI:
    return sdk(local, http, "the-owners-key")


def chat_line(custom_id: str, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def seed_lines(model: str) -> list[dict[str, Any]]:
    """The three seed events of events/ (summarize, translate, chat) as OpenAI chat completion requests."""
    summarize, translate, chat = (
        json.loads((ROOT / "events" / name).read_text(encoding="utf-8"))
        for name in ("summarize.json", "translate.json", "chat-solve.json")
    )
    return [
        chat_line("summarize", model, [{"role": "user", "content": f"Summarize as bullets:\n\n{summarize['text']}"}]),
        chat_line(
            "translate",
            model,
            [{"role": "user", "content": f"Translate into {translate['target_language']}:\n\n{translate['text']}"}],
        ),
        chat_line("chat", model, chat["messages"]),
    ]


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")


def upload_and_start(client: openai.OpenAI, lines: list[dict[str, Any]]) -> tuple[FileObject, Batch]:
    uploaded = client.files.create(file=("seed.jsonl", jsonl(lines), "application/jsonl"), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    return uploaded, batch


def wait_until_ended(client: openai.OpenAI, batch_id: str) -> Batch:
    """The batch once it has ended; the test fails with its last state when it has not within BATCH_WAIT_S."""
    give_up_at = time.monotonic() + BATCH_WAIT_S
    batch = client.batches.retrieve(batch_id)
    while batch.status not in ENDED:
        if time.monotonic() > give_up_at:
            pytest.fail(f"the batch did not end within {BATCH_WAIT_S} s: {batch.model_dump_json()}")
        time.sleep(0.5)
        batch = client.batches.retrieve(batch_id)
    return batch


@pytest.fixture(scope="module")
def seed_batch(owner: openai.OpenAI) -> tuple[list[dict[str, Any]], FileObject, Batch, Batch]:
    """The seed tasks' batch: its lines, input file, the batch as created and as it ended."""
    [model] = owner.models.list().data
    lines = seed_lines(model.id)
    uploaded, created = upload_and_start(owner, lines)
    return lines, uploaded, created, wait_until_ended(owner, created.id)


def test_a_batch_of_the_seed_tasks_completes_with_the_tables_texts(
    local: serve.LocalApi, owner: openai.OpenAI, seed_batch: tuple[list[dict[str, Any]], FileObject, Batch, Batch]
) -> None:
    lines, uploaded, created, ended = seed_batch
    # GIVEN the uploaded file and the batch as created
    assert (uploaded.purpose, uploaded.filename, uploaded.bytes) == ("batch", "seed.jsonl", len(jsonl(lines)))
    assert created.input_file_id == uploaded.id
    assert created.status in {"validating", "in_progress"}
    # THEN the scheduled runs completed it, every line answered
    assert ended.status == "completed", ended.model_dump_json()
    assert ended.request_counts == BatchRequestCounts(total=3, completed=3, failed=0)
    assert ended.output_file_id is not None
    assert ended.completed_at is not None
    # AND its output lines parse with the SDK's types, one per input line, each with its item's text
    output = [
        OutputLine.model_validate_json(text) for text in owner.files.content(ended.output_file_id).text.splitlines()
    ]
    assert sorted(line.custom_id for line in output) == sorted(line["custom_id"] for line in lines)
    items = {item["id"]: item for item in Table(local.table_name, local.table_endpoint).items()}
    for line in output:
        assert line.error is None
        assert line.response is not None
        assert line.response.status_code == 200
        completion = ChatCompletion.model_validate(line.response.body)
        item = items[completion.id.removeprefix("chatcmpl-")]
        assert line.response.request_id == item["id"]
        assert item["status"] == "DONE"
        assert completion.choices[0].message.content == item["output"]
        assert item["output"]
    # AND the owner's list shows it
    assert created.id in [batch.id for batch in owner.batches.list()]


def test_another_api_key_finds_none_of_the_owners_files_or_batches(
    local: serve.LocalApi, http: httpx.Client, seed_batch: tuple[list[dict[str, Any]], FileObject, Batch, Batch]
) -> None:
    _, uploaded, created, ended = seed_batch
    assert ended.output_file_id is not None
    other = sdk(local, http, "another-key")
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(ended.output_file_id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(created.id)
    with pytest.raises(openai.NotFoundError):
        other.files.delete(uploaded.id)
    assert created.id not in [batch.id for batch in other.batches.list()]
    assert uploaded.id not in [listed.id for listed in other.files.list()]


def test_a_cancelled_batch_stops_queuing_its_lines(real_model: Path) -> None:
    # GIVEN an API that queues one line of a batch at a time
    with served_api(real_model, BATCH_WINDOW="1") as local, httpx.Client(timeout=120) as http:
        assert local.scheduled_runs is not None
        client = sdk(local, http, "the-cancellers-key")
        [model] = client.models.list().data
        lines = [
            chat_line(f"count-{start}", model.id, [{"role": "user", "content": f"Count from {start} to {start + 5}."}])
            for start in range(1, 5)
        ]
        # WHEN a batch of four lines is cancelled at once
        _, created = upload_and_start(client, lines)
        cancelling = client.batches.cancel(created.id)
        assert cancelling.status in {"cancelling", "cancelled"}
        # THEN the scheduled runs end it cancelled
        ended = wait_until_ended(client, created.id)
        assert ended.status == "cancelled", ended.model_dump_json()
        assert ended.cancelled_at is not None
        # AND, two runs later still, at most the window's line (and one more, had a run come between the create and
        # the cancel) was ever queued or generated: the rest never were
        assert local.scheduled_runs.wait_for_runs(local.scheduled_runs.finished + 2, BATCH_WAIT_S)
        queued = Table(local.table_name, local.table_endpoint).items()
        assert len(queued) <= 2
        assert sum(local.generations().values()) <= len(queued)
        assert client.batches.retrieve(created.id).status == "cancelled"
