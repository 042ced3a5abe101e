"""scripts/local/invoke.py (`make run`): each event's answer through the Lambda runtime, then its stored item."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.local.invoke import asks_to_store, main
from tests.support.events import load_event
from tests.support.local_aws import Table


def test_only_an_event_with_store_false_asks_for_no_stored_item() -> None:
    # GIVEN events with and without the store option THEN only "store": false asks for none
    assert asks_to_store(load_event("summarize.json"))
    assert asks_to_store({"task": "summarize", "text": "x", "options": {"store": True}})
    assert asks_to_store({"task": "summarize", "text": "x", "options": "not an object"})
    assert not asks_to_store({"task": "summarize", "text": "x", "options": {"store": False}})


def test_an_answer_not_stored_is_printed_and_not_reported_as_failed(
    tiny_model: Path, results_table: Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an event that asks for its answer only, and one whose answer is stored
    unstored = tmp_path / "unstored.json"
    unstored.write_text(json.dumps({**load_event("summarize.json"), "options": {"max_tokens": 8, "store": False}}))
    stored = tmp_path / "stored.json"
    stored.write_text(json.dumps({**load_event("translate.json"), "options": {"max_tokens": 8}}))

    # WHEN both go through the local runtime, against the test's table
    code = main(
        [
            str(unstored),
            str(stored),
            "--model",
            str(tiny_model),
            "--endpoint",
            results_table.endpoint_url,
            "--table",
            results_table.name,
            "--log",
            str(tmp_path / "emulator.log"),
            "--env",
            "N_THREADS=2",
        ]
    )
    out, err = capsys.readouterr()

    # THEN both succeed: the first answer is printed and said to be unstored, the second's stored item shown
    assert code == 0, err
    assert "ERROR" not in err
    assert '"status": "DONE"' in out
    assert '--- not stored (the event says "store": false) ---' in out
    assert out.count("--- stored item") == 1
    # AND the table holds the stored request's item only
    assert len(results_table.items()) == 1
