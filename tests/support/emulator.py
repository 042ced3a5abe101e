"""The Lambda Runtime Interface Emulator serving a handler of this repository against a moto table; its logs read."""

from __future__ import annotations

import sys
from pathlib import Path

from scripts.local.emulator import LambdaEmulator
from scripts.repository import ROOT
from tests.support.local_aws import DUMMY_AWS, Table


def start_emulator(
    table: Table, log_path: Path, handler: str = "handler.entry.direct.lambda_handler", **settings: str
) -> LambdaEmulator:
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
    return LambdaEmulator(handler=handler, env=env, cwd=ROOT, python=sys.executable, log_path=log_path, memory_mb=10240)


def generations_in(emulator_logs: str) -> int:
    """How many generations an emulator's function ran, from its logs."""
    return emulator_logs.count('"message":"generation finished"')
