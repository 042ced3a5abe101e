"""The handler served by the real Lambda Runtime Interface Emulator, against moto server and the tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.local.emulator import LambdaEmulator
from tests.support.emulator import generations_in, start_emulator
from tests.support.events import BAD_EVENTS, load_event
from tests.support.local_aws import Table


@pytest.fixture
def emulator(tiny_model: Path, results_table: Table, tmp_path: Path) -> Iterator[LambdaEmulator]:
    with start_emulator(results_table, tmp_path / "emulator.log", MODEL_PATH=str(tiny_model)) as running:
        yield running


def test_runtime_warm_environment_reuses_model_and_serves_cached_answer(
    emulator: LambdaEmulator, results_table: Table
) -> None:
    # GIVEN a fresh execution environment
    # WHEN two different events and then the first one again are invoked
    first = emulator.invoke(load_event("summarize.json"))
    second = emulator.invoke(load_event("translate.json"))
    again = emulator.invoke(load_event("summarize.json"))

    # THEN the first is a cold start that loaded the model, the second is warm
    assert first["metrics"]["cold_start"] is True
    assert first["metrics"]["load_ms"] > 0
    assert second["metrics"]["cold_start"] is False
    assert second["metrics"]["load_ms"] is None
    # AND the repeat is answered from the table without generating
    assert again["cached"] is True
    assert again["id"] == first["id"]
    assert again["output"] == first["output"]
    assert generations_in(emulator.logs()) == 2
    assert {item["id"] for item in results_table.items()} == {first["id"], second["id"]}
    # AND metrics were emitted as CloudWatch EMF
    assert '"CloudWatchMetrics"' in emulator.logs()
    assert '"eval_tokens_per_s"' in emulator.logs()


@pytest.mark.parametrize("name", ["summarize.json", "translate.json", "chat-solve.json"])
def test_runtime_answers_each_sample_event_and_stores_it(
    name: str, emulator: LambdaEmulator, results_table: Table
) -> None:
    answer = emulator.invoke(load_event(name))

    assert set(answer) >= {"id", "task", "status", "output", "finish_reason", "cached", "metrics", "model"}
    assert answer["status"] == "DONE"
    assert answer["metrics"]["prompt_tokens"] > 0
    assert answer["metrics"]["completion_tokens"] > 0
    assert answer["metrics"]["eval_tokens_per_s"] > 0
    assert answer["metrics"]["prompt_tokens_per_s"] > 0
    (item,) = results_table.items()
    assert item["id"] == answer["id"]
    assert item["output"] == answer["output"]


def test_runtime_bad_inputs_answer_clear_errors_and_store_nothing(
    emulator: LambdaEmulator, results_table: Table
) -> None:
    events: list[Any] = [param.values[0] for param in BAD_EVENTS]
    events.append({"task": "summarize", "text": "long " * 6000, "strategy": "single"})

    answers = [emulator.invoke(event) for event in events]

    for event, answer in zip(events, answers, strict=True):
        assert set(answer) == {"error"}, (event, answer)
        assert answer["error"]["type"] in {"InvalidRequest", "InputTooLong"}
        assert "Traceback" not in str(answer)
    assert answers[-1]["error"]["details"]["context_window"] == 4096
    assert results_table.items() == []
    assert generations_in(emulator.logs()) == 0


def test_runtime_does_not_log_user_text(emulator: LambdaEmulator) -> None:
    secret = "The confidential merger of Alpha Corp and Beta Ltd closes Friday."

    emulator.invoke({"task": "summarize", "text": secret, "options": {"max_tokens": 8}})

    assert "confidential merger" not in emulator.logs()
