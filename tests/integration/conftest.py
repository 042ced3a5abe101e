"""Fixtures of the integration tier: the engine on the tiny model, the API's environment and its Lambda entry point
called in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handler import engine as engine_module
from handler.core.errors import ModelLoadError
from handler.core.settings import settings_from
from handler.engine import Engine, load_engine
from handler.entry import api
from tests.support.apigw import ApiAnswer, decode
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table


@pytest.fixture
def api_env(service_env: Table, monkeypatch: pytest.MonkeyPatch) -> Table:
    """The service environment, where a request fits the API budget (whatever speeds this process measured)."""
    monkeypatch.setenv("EXPECTED_PROMPT_TOKENS_PER_S", "5000")
    monkeypatch.setenv("EXPECTED_EVAL_TOKENS_PER_S", "5000")
    monkeypatch.setenv("EXPECTED_LOAD_S", "1")
    monkeypatch.setenv("API_BUDGET_S", "900")
    return service_env


@pytest.fixture
def call(lambda_context: FakeLambdaContext) -> Callable[[dict[str, Any]], ApiAnswer]:
    """Invokes the API's Lambda entry point with a proxy event."""

    def invoke(event: dict[str, Any]) -> ApiAnswer:
        return decode(api.lambda_handler(event, lambda_context))

    return invoke


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process has no model loaded, and loading one fails."""

    def refuse(settings: Any) -> Any:
        raise ModelLoadError("the model must not load in this test")

    monkeypatch.setattr(engine_module.process_engine, "engine", None)
    monkeypatch.setattr(engine_module.process_engine, "load", refuse)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    """The engine on the tiny model, one per test module."""
    return load_engine(settings_from({"MODEL_PATH": str(tiny_model), "N_THREADS": "2"}))
