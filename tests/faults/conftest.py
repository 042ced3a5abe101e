"""Fixtures of the faults tier: moto server behind the fault proxy (a table, a work queue and a batch bucket), the
environment a function's child process gets, the slow model, and the ledger of the cases (bench-results/faults.json).

The functions run as Lambda runs them, one invocation per child process (tests/support/function_process.py), or
in this process where no process is killed; every AWS call they make goes through the proxy, which breaks the
calls a case names. The tests read the table straight from moto, past the proxy.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handler import engine as engine_module
from scripts.local.moto_server import create_table_from_template, local_client
from scripts.models import random_model
from scripts.repository import ROOT, TEMPLATE
from tests.faults.recovery import FaultyAws
from tests.support.fault_proxy import FaultProxy
from tests.support.ledger import Ledger
from tests.support.local_aws import DUMMY_AWS, Table

#: Seconds a received message stays invisible: short, so that redeliveries come within a test.
VISIBILITY_S = 2
#: The functions' safety margin: a lease lasts the invocation's remaining time and this.
MARGIN_S = 1


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phi3 model slow enough to act on mid-generation (SLOW_MODEL_PATH when the Makefile made it already)."""
    given = os.environ.get("SLOW_MODEL_PATH")
    if given and Path(given).is_file():
        return Path(given).resolve()
    return random_model.make_model(tmp_path_factory.mktemp("slow") / "slow-phi3.gguf", preset="slow-phi3")


@pytest.fixture(scope="session")
def ledger() -> Iterator[Ledger]:
    """The fault cases of this run, written to bench-results/faults.json at its end (docs/reliability.md)."""
    kept = Ledger()
    yield kept
    if kept.cases:
        kept.write(ROOT / "bench-results" / "faults.json")


@pytest.fixture
def aws(
    monkeypatch: pytest.MonkeyPatch, dynamodb_endpoint: str, tiny_model: Path, tmp_path: Path
) -> Iterator[FaultyAws]:
    """A fresh table (template.yaml's), work queue and bucket on moto, reached through the fault proxy; this
    process's environment points there too, for handlers called in-process."""
    name = f"faults-{uuid.uuid4().hex[:8]}"
    create_table_from_template(dynamodb_endpoint, name, TEMPLATE)
    queue_url = _direct("sqs", dynamodb_endpoint).create_queue(
        QueueName=name, Attributes={"VisibilityTimeout": str(VISIBILITY_S)}
    )["QueueUrl"]
    _direct("s3", dynamodb_endpoint).create_bucket(Bucket=name)
    with FaultProxy(dynamodb_endpoint) as proxy:
        env = {
            **DUMMY_AWS,
            "AWS_ENDPOINT_URL": proxy.endpoint_url,
            "MODEL_PATH": str(tiny_model),
            "TABLE_NAME": name,
            "WORK_QUEUE_URL": queue_url,
            "BATCH_BUCKET": name,
            "N_THREADS": "1",
            "SAFETY_MARGIN_S": str(MARGIN_S),
            "POWERTOOLS_METRICS_NAMESPACE": "LlmService",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # Handlers called in this process load the model MODEL_PATH names, not one an earlier test left loaded.
        monkeypatch.setattr(engine_module.process_engine, "engine", None)
        for key in ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(key, raising=False)
        yield FaultyAws(proxy, Table(name, dynamodb_endpoint), queue_url, name, tmp_path / "functions", tiny_model, env)


def _direct(service: str, endpoint_url: str) -> Any:
    """A client straight to moto, past the proxy."""
    return local_client(service, endpoint_url)
