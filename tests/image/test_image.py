"""Image tests: the image `sam build` made (`make sam-build`), run as its users run it, by `sam local`.

Run by `make test-image` (and CI, after `make test`): seed events through `sam local invoke` with a
local DynamoDB and SQS (moto), the API through `sam local start-api` with a real HTTP client, the
worker with an SQS event and the batch job with a scheduled event from `sam local generate-event`,
a batch through OpenAI's Files and Batches API that the batch job completes, the image's own entry
point, its size and the build log's llama.cpp system-info line.

A missing Docker engine or a missing build fails these tests; they are never skipped.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handler.engine import builds as llama_builds
from scripts.builds import llama as build_llama
from scripts.repository import ROOT
from scripts.sam.api import entry_point, http, request_body, start_api
from scripts.sam.aws import LocalAws, local_aws
from scripts.sam.build import built_images, summary_of_build
from scripts.sam.invoke import Invocation, check_answer, generate_event, sam_invoke
from scripts.sam.loop import BUILD_LOG, BUILT_TEMPLATE, docker_answers, image_exists, image_size_mb

#: Lambda's limit on an image's size.
LAMBDA_IMAGE_LIMIT_MB = 10 * 1024


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    problem = docker_answers()
    if problem is not None:
        pytest.fail(f"no Docker engine: {problem} (scripts/docker/engine.sh installs or starts one)")
    if not BUILT_TEMPLATE.is_file():
        pytest.fail(f"{BUILT_TEMPLATE} is missing: run `make sam-build` first")
    built = built_images()
    missing = [image for image in built.values() if not image_exists(image)]
    assert not missing, f"images named by the built template are missing: {missing}"
    return built


@pytest.fixture(scope="module")
def aws(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAws]:
    """One moto server (DynamoDB and SQS) for the module, where the function containers reach it."""
    with local_aws(tmp_path_factory.mktemp("sam") / "env.json") as local:
        yield local


@pytest.fixture(scope="module")
def api_url(aws: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("api") / "start-api.log"
    with start_api(aws.env_file, log) as url:
        yield url


def event_path(name: str) -> Path:
    return ROOT / "events" / name


def body_of(name: str) -> str:
    return request_body(f"events/{name}")


def report(label: str, seconds: float, detail: str = "") -> None:
    print(f"\n[{label}: {seconds:.1f} s] {detail}", flush=True)


# --- the build ---------------------------------------------------------------------------------------


def test_build_log_names_the_base_and_llama_cpp_instruction_sets(images: dict[str, str]) -> None:
    log = BUILD_LOG.read_text(encoding="utf-8")

    summary = summary_of_build(log, images["GenerateFunction"])
    print("\n" + summary)

    assert "base image: (not in the build log)" not in summary
    # The packaged x86_64 build is portable: AVX2 and FMA, never AVX-512 (layers/build/cmake-amd64.args);
    # the AVX-512 build beside it is chosen at cold start (test_cold_start_runs_the_build_for_this_cpu).
    info = summary.split("llama.cpp system info:", 1)[1]
    if platform.machine() in ("x86_64", "AMD64"):
        assert "AVX2 = 1" in info
        assert "AVX512 = 1" not in info


def test_images_fit_lambda_and_share_one_build(images: dict[str, str]) -> None:
    sizes = {name: image_size_mb(image) for name, image in images.items()}
    for name, size in sorted(sizes.items()):
        print(f"\nimage {name} ({images[name]}): {size:.0f} MB")

    assert set(images) == {"GenerateFunction", "ApiFunction", "BatchFunction", "BatchFilesFunction", "WorkerFunction"}
    assert all(size < LAMBDA_IMAGE_LIMIT_MB for size in sizes.values())
    ids = {
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True, check=True
        ).stdout.strip()
        for image in images.values()
    }
    assert len(ids) == 1, "the four functions should run one image"


# --- sam local invoke ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_answers(aws: LocalAws) -> dict[str, Invocation]:
    answers = {}
    for name in ("summarize.json", "translate.json", "chat-solve.json"):
        answers[name] = sam_invoke("GenerateFunction", event_path(name), aws.env_file)
        report(f"sam local invoke GenerateFunction --event events/{name}", answers[name].seconds)
    return answers


@pytest.mark.parametrize("name", ["summarize.json", "translate.json", "chat-solve.json"])
def test_seed_event_is_generated_and_stored(seed_answers: dict[str, Invocation], aws: LocalAws, name: str) -> None:
    answer = seed_answers[name].response
    print(f"\n{name}: {json.dumps(answer, ensure_ascii=False)[:800]}")

    assert check_answer(answer, aws) is None
    assert answer["cached"] is False
    assert answer["model"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert answer["metrics"]["cold_start"] is True  # every sam local invoke is a new container
    assert answer["metrics"]["completion_tokens"] > 0
    item = aws.item(answer["id"])
    assert item is not None
    assert item["output"] == answer["output"]


def test_cold_start_runs_the_build_for_this_cpu(seed_answers: dict[str, Invocation]) -> None:
    """The image carries the AVX2 and the AVX-512 build; the container runs on this host's CPU."""
    loaded = [
        json.loads(line)
        for invocation in seed_answers.values()
        for line in invocation.logs.splitlines()
        if line.startswith("{") and '"model loaded"' in line
    ]
    assert loaded, "no 'model loaded' log line in the invocations' logs"
    host = llama_builds.host_cpu_flags() or frozenset()
    avx512 = set(
        build_llama.required_cpu_flags(build_llama.read_flags(build_llama.BUILD_DIR / "cmake-amd64-avx512.args"))
    )
    for line in loaded:
        print(f"\nllama_build={line['llama_build']} ({line['llama_build_reason']}): {line['system_info']}")
        if platform.machine() != "x86_64":
            assert line["llama_build"] == "packaged"
        elif avx512 <= host:
            assert line["llama_build"] == "avx512"
            assert line["llama_lib_dir"] == "/opt/llama-cpp/avx512"
            assert "AVX512 = 1" in line["system_info"]
        else:
            assert line["llama_build"] == "packaged"
            assert "AVX512 = 1" not in line["system_info"]


def test_identical_invoke_is_answered_from_the_table(seed_answers: dict[str, Invocation], aws: LocalAws) -> None:
    again = sam_invoke("GenerateFunction", event_path("summarize.json"), aws.env_file)
    report("sam local invoke GenerateFunction --event events/summarize.json (again)", again.seconds)
    first = seed_answers["summarize.json"].response

    assert again.response["cached"] is True
    assert again.response["id"] == first["id"]
    assert again.response["output"] == first["output"]
    # Answered without loading the model.
    assert "model loaded" not in again.logs


def test_invalid_event_is_answered_with_the_error_shape(aws: LocalAws, tmp_path: Path) -> None:
    event = tmp_path / "bad.json"
    event.write_text(json.dumps({"task": "summarize", "text": ""}), encoding="utf-8")

    answer = sam_invoke("GenerateFunction", event, aws.env_file).response

    assert answer["error"]["type"] == "InvalidRequest"
    assert "text" in answer["error"]["message"]


# --- sam local start-api ------------------------------------------------------------------------------


def test_api_answers_a_stored_request_with_200_from_the_table(
    api_url: str, seed_answers: dict[str, Invocation]
) -> None:
    answer = http("POST", f"{api_url}/summarize", body_of("summarize.json"), {"Content-Type": "application/json"})
    report("POST /summarize", answer.seconds, f"HTTP {answer.status}")

    assert answer.status == 200
    assert answer.body["cached"] is True
    assert answer.body["id"] == seed_answers["summarize.json"].response["id"]
    done = http("GET", f"{api_url}/results/{answer.body['id']}")
    assert done.status == 200
    assert done.body["status"] == "DONE"


@pytest.fixture(scope="module")
def queued(api_url: str, aws: LocalAws) -> list[dict[str, Any]]:
    """Two requests queued through the API (202): their answers."""
    answers = []
    for route, text in (("/translate", "Good morning."), ("/summarize", "Llamas are domesticated camelids.")):
        answer = http(
            "POST",
            f"{api_url}{route}",
            json.dumps({"text": text, "options": {"max_tokens": 32}}),
            {"Content-Type": "application/json", "Prefer": "respond-async"},
        )
        report(f"POST {route} (Prefer: respond-async)", answer.seconds, f"HTTP {answer.status}")
        assert answer.status == 202, answer.body
        assert answer.headers["location"] == f"/results/{answer.body['id']}"
        answers.append({**answer.body, "location": answer.headers["location"]})
    return answers


def test_api_queues_with_202_and_location(api_url: str, queued: list[dict[str, Any]], aws: LocalAws) -> None:
    for answer in queued:
        polled = http("GET", f"{api_url}{answer['location']}")
        assert polled.status == 200
        assert polled.body["status"] == "PENDING"
        item = aws.item(answer["id"])
        assert item is not None
        assert item["status"] == "PENDING"


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status"),
    [
        ("POST", "/chat", "{", "application/json", 400),
        ("GET", "/results/" + "0" * 64, None, None, 404),
        ("GET", "/summarize", None, None, 405),
        ("POST", "/translate", "hello", "text/plain", 415),
        ("POST", "/summarize", "{}", "application/json", 422),
    ],
)
def test_api_errors_have_the_one_error_shape(
    api_url: str, method: str, path: str, body: str | None, content_type: str | None, status: int
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}

    answer = http(method, f"{api_url}{path}", body, headers)

    assert answer.status == status, answer.body
    assert set(answer.body) == {"error"}
    assert {"type", "message"} <= set(answer.body["error"])


def test_the_openai_sdk_gets_real_text_then_the_same_answer_from_the_table(api_url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{api_url}/v1", api_key="unused-locally", max_retries=0, timeout=120)
    (served,) = [model.id for model in client.models.list().data]
    messages: Any = [{"role": "user", "content": "Name two colours of the rainbow."}]

    started = time.perf_counter()
    first = client.chat.completions.create(model=served, messages=messages, max_tokens=24)
    report("openai chat.completions.create", time.perf_counter() - started, repr(first.choices[0].message.content))
    started = time.perf_counter()
    again = client.chat.completions.create(model=served, messages=messages, max_tokens=24)
    report("openai chat.completions.create, again", time.perf_counter() - started, "")

    text = first.choices[0].message.content or ""
    assert first.object == "chat.completion"
    assert len(text.split()) >= 2
    assert (first.model_extra or {})["llm_service"]["cached"] is False
    assert again.choices[0].message.content == text
    assert (again.model_extra or {})["llm_service"]["cached"] is True
    assert again.id == first.id


def test_the_openai_sdk_gets_json_that_validates_against_its_schema(api_url: str) -> None:
    import jsonschema
    import openai

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    client = openai.OpenAI(base_url=f"{api_url}/v1", api_key="unused-locally", max_retries=0, timeout=120)
    (served,) = [model.id for model in client.models.list().data]

    answer = client.chat.completions.create(
        model=served,
        messages=[{"role": "user", "content": "Describe a person named Ada as JSON."}],
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )

    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), schema)


# --- the worker (SQS) and the batch job (schedule) ----------------------------------------------------


def test_worker_generates_a_queued_request_from_an_sqs_event(
    queued: list[dict[str, Any]], aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN the first queued request's message, as the work queue holds it
    wanted = queued[0]["id"]
    messages = {message["Body"]: message for message in aws.receive()}
    message = messages[json.dumps({"id": wanted})]
    # WHEN the worker gets it in an SQS event made by sam local generate-event (which pastes --body into
    # its JSON unescaped, so a JSON body goes in afterwards)
    event = generate_event("sqs", "receive-message", "--body", "placeholder")
    (record,) = event["Records"]
    record.update(body=message["Body"], messageId=message["MessageId"])
    event_file = tmp_path / "sqs.json"
    event_file.write_text(json.dumps(event), encoding="utf-8")
    done = sam_invoke("WorkerFunction", event_file, aws.env_file)
    report("sam local invoke WorkerFunction (SQS event)", done.seconds, json.dumps(done.response))

    # THEN no message failed and the request is DONE
    assert done.response == {"batchItemFailures": []}
    item = aws.item(wanted)
    assert item is not None
    assert item["status"] == "DONE"
    assert item["output"]


def test_batch_job_works_through_pending_requests_on_a_schedule(
    queued: list[dict[str, Any]], aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN a request still PENDING, and a scheduled event made by sam local generate-event
    pending = queued[1]["id"]
    event = generate_event("cloudwatch", "scheduled-event")
    event_file = tmp_path / "schedule.json"
    event_file.write_text(json.dumps(event), encoding="utf-8")

    # WHEN the batch function runs on it
    done = sam_invoke("BatchFunction", event_file, aws.env_file)
    report("sam local invoke BatchFunction (scheduled event)", done.seconds, json.dumps(done.response)[:600])

    # THEN it claimed and finished the pending request
    assert "error" not in done.response, done.response
    assert done.response["run"]["done"] >= 1
    item = aws.item(pending)
    assert item is not None
    assert item["status"] == "DONE"


# --- OpenAI's Files and Batches API: the SDK through sam local start-api, the lines generated on a schedule --


def batch_line(custom_id: str, model: str, question: str) -> dict[str, Any]:
    """A line of an OpenAI Batch file: a chat completion request, greedy and short."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 24}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def test_the_openai_sdk_s_batch_is_completed_by_the_scheduled_batch_function(
    api_url: str, aws: LocalAws, tmp_path: Path
) -> None:
    import openai
    from openai.types import BatchRequestCounts
    from openai.types.chat import ChatCompletion

    # (sam local start-api gives a request no identity: the local loop's --env-vars file names its owner)
    client = openai.OpenAI(base_url=f"{api_url}/v1", api_key="unused-locally", max_retries=0, timeout=120)
    (served,) = [model.id for model in client.models.list().data]
    questions = {
        "colours": "Name two colours of the rainbow.",
        "greeting": "Say good morning in French.",
        "sum": "What is 2 + 3?",
    }
    lines = [batch_line(custom_id, served, question) for custom_id, question in questions.items()]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")

    # GIVEN a batch file uploaded as multipart/form-data (API Gateway, and sam local, pass it base64-encoded)
    uploaded = client.files.create(file=("requests.jsonl", content, "application/jsonl"), purpose="batch")
    assert (uploaded.purpose, uploaded.filename, uploaded.bytes) == ("batch", "requests.jsonl", len(content))
    assert client.files.content(uploaded.id).content == content
    # AND a batch over it, its lines queued
    created = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert created.status == "in_progress", created.model_dump_json()
    assert created.input_file_id == uploaded.id

    # WHEN the batch function runs on a scheduled event, as EventBridge Scheduler runs it
    event_file = tmp_path / "schedule.json"
    event_file.write_text(json.dumps(generate_event("cloudwatch", "scheduled-event")), encoding="utf-8")
    run = sam_invoke("BatchFunction", event_file, aws.env_file)
    report("sam local invoke BatchFunction (scheduled event)", run.seconds, json.dumps(run.response)[:600])

    # THEN that run generated the batch's lines and completed it
    assert "error" not in run.response, run.response
    assert {"batch": created.id, "status": "completed", "total": 3, "completed": 3, "failed": 0} in run.response[
        "batches"
    ]
    ended = client.batches.retrieve(created.id)
    assert ended.status == "completed", ended.model_dump_json()
    assert ended.request_counts == BatchRequestCounts(total=3, completed=3, failed=0)
    assert ended.completed_at is not None
    assert ended.error_file_id is None
    assert ended.output_file_id is not None
    # AND the output file has a line per custom_id, each a chat completion with the text stored in the table
    output = [json.loads(text) for text in client.files.content(ended.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in output) == sorted(questions)
    for line in output:
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        completion = ChatCompletion.model_validate(line["response"]["body"])
        item = aws.item(completion.id.removeprefix("chatcmpl-"))
        assert item is not None
        assert item["status"] == "DONE"
        assert item["output"]
        assert completion.choices[0].message.content == item["output"]
    # AND the caller's lists show the batch and its files
    assert created.id in [batch.id for batch in client.batches.list()]
    assert {uploaded.id, ended.output_file_id} <= {listed.id for listed in client.files.list()}


# --- the console page, from the image's task root -----------------------------------------------------------


def test_the_console_page_and_its_files_are_served_from_the_image(api_url: str) -> None:
    page = http("GET", f"{api_url}/")
    assert page.status == 200, page.body
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', str(page.body))
    assert scripts, page.body
    for source in scripts:
        asset = http("GET", f"{api_url}{source}" if source.startswith("/") else f"{api_url}/{source}")
        assert asset.status == 200, (source, asset.body)
        assert asset.headers["content-type"].startswith("text/javascript")


# --- the image's own entry point (no sam) --------------------------------------------------------------


def test_image_entry_point_serves_invokes_through_its_own_emulator(images: dict[str, str]) -> None:
    # Without AWS_LAMBDA_RUNTIME_API, /lambda-entrypoint.sh puts the Runtime Interface Emulator in front.
    event = {
        "task": "chat",
        "messages": [{"role": "user", "content": "Say hello."}],
        "options": {"max_tokens": 16, "store": False},
    }
    with entry_point(images["GenerateFunction"]) as container:
        answer = container.invoke(json.dumps(event), 60, 1, timeout=120)
    report("docker run + invoke through the image's entry point", answer.seconds)
    assert answer.body["status"] == "DONE", answer.body
    assert answer.body["stored"] is False
