"""Scheduled batch runs served by the Lambda Runtime Interface Emulator, against moto server and the tiny model."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from scripts.batch import enqueue as enqueue_script
from scripts.local.emulator import LambdaEmulator
from tests.support.emulator import generations_in, start_emulator
from tests.support.local_aws import Table


def _write_requests(path: Path, count: int, prefix: str) -> Path:
    lines = [
        json.dumps({"task": "summarize", "text": f"{prefix} {n}: boosting with GOSS.", "options": {"max_tokens": 8}})
        for n in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _enqueued(table: Table, tiny_model: Path, path: Path, count: int, prefix: str) -> Path:
    """Requests written to a JSONL file and queued with the enqueue script; the file's path."""
    source = _write_requests(path, count, prefix)
    assert enqueue_script.main([str(source), "--table", table.name, "--model", str(tiny_model)]) == 0
    return source


def _scheduler(tiny_model: Path, table: Table, log_path: Path) -> LambdaEmulator:
    return start_emulator(
        table,
        log_path,
        "handler.entry.schedule.schedule_handler",
        MODEL_PATH=str(tiny_model),
        N_THREADS="1",
    )


def test_scheduled_runs_finish_fifty_enqueued_requests_exactly_once(
    tiny_model: Path, service_env: Table, tmp_path: Path
) -> None:
    # GIVEN 50 requests enqueued from JSONL
    results_table = service_env
    source = _enqueued(results_table, tiny_model, tmp_path / "requests.jsonl", 50, "Fifty")

    # WHEN the scheduled job runs until nothing is pending
    runs: list[dict[str, Any]] = []
    with _scheduler(tiny_model, results_table, tmp_path / "scheduler.log") as scheduler:
        while not runs or runs[-1]["run"]["claimed"] > 0:
            runs.append(scheduler.invoke({}))
            assert len(runs) <= 5, runs
        generations = generations_in(scheduler.logs())

    # THEN every request has exactly one DONE item with metrics, each generated once
    items = results_table.items()
    assert len(items) == 50
    assert {item["status"] for item in items} == {"DONE"}
    assert all(item["metrics"]["eval_tokens_per_s"] > 0 for item in items)
    assert generations == 50
    assert sum(run["run"]["done"] for run in runs) == 50
    # AND enqueueing the same file again adds nothing
    report = enqueue_script.enqueue_all(enqueue_script.read_jsonl(source), results_table.name, str(tiny_model), None)
    assert (report.new, report.already_done) == (0, 50)
    assert len(results_table.items()) == 50


def test_four_racing_workers_do_forty_items_once_each(tiny_model: Path, service_env: Table, tmp_path: Path) -> None:
    # GIVEN 40 queued requests and four workers started together
    results_table = service_env
    _enqueued(results_table, tiny_model, tmp_path / "race.jsonl", 40, "Race")

    with ExitStack() as stack:
        workers = [
            stack.enter_context(_scheduler(tiny_model, results_table, tmp_path / f"worker-{n}.log")) for n in range(4)
        ]
        # WHEN they all run over the same items at once
        with ThreadPoolExecutor(max_workers=4) as pool:
            summaries = [answer["run"] for answer in pool.map(lambda worker: worker.invoke({}), workers)]
        generations = sum(generations_in(worker.logs()) for worker in workers)

    # THEN 40 DONE, 40 generations in all, none twice
    assert [item["status"] for item in results_table.items()] == ["DONE"] * 40
    assert generations == 40
    assert sum(summary["done"] for summary in summaries) == 40
    assert sum(summary["claimed"] for summary in summaries) == 40
