"""`make serve` under load: admission control (429 and 503 with Retry-After, in the API's error shapes), a small
load run through scripts/local/load.py, and the function's process dying while idle (a new one serves the next
request). The function killed mid-request is a fault case: tests/faults/test_served_api.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from scripts.local import load, serve
from scripts.local.load_requests import LoadPlan
from tests.support.served_api import (
    CLIENT_TIMEOUT_S,
    SHORT_BUDGET,
    Background,
    api_behind_proxy,
    chat,
    hold_result_writes,
    post,
    unique_table,
    wait_for,
)


def test_a_full_line_is_answered_429_and_a_long_wait_503_each_with_retry_after(tiny_model: Path) -> None:
    with api_behind_proxy(tiny_model, max_waiting=2, max_wait_s=5) as (local, proxy):
        # GIVEN the one execution environment busy (its result write held) and the line of two full
        held = hold_result_writes(proxy)
        running = Background(local, "/chat", chat("the one that runs"))
        assert held.held.wait(CLIENT_TIMEOUT_S)
        waiting = [Background(local, "/chat", chat(f"waiting {number}")) for number in range(2)]
        wait_for(lambda: local.admission.waiting == 2, "two requests in line")

        # WHEN one more arrives, natively and OpenAI-style: 429 at once, with Retry-After, in each route's shape
        status, headers, body = post(local, "/summarize", {"text": "one too many", "options": {"max_tokens": 8}})
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert body["error"]["type"] == "TooManyRequests"
        assert body["error"]["message"]
        status, headers, body = post(
            local, "/v1/chat/completions", {"model": "tiny-phi3", "messages": [{"role": "user", "content": "x"}]}
        )
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "rate_limit_error"

        # THEN those in line, never admitted within max_wait_s, get 503 with Retry-After
        for request in waiting:
            status, headers, body = request.result()
            assert status == 503
            assert int(headers["Retry-After"]) >= 1
            assert body["error"]["type"] == "ServiceUnavailable"
        # AND the one that ran finishes when its write goes through; the line serves again after it
        held.released.set()
        status, _, body = running.result()
        assert (status, body["status"]) == (200, "DONE")
        status, _, body = post(local, "/chat", chat("after the rush"))
        assert (status, body["status"]) == (200, "DONE")


def test_a_small_load_run_answers_every_request_and_stores_every_accepted_one_once(tiny_model: Path) -> None:
    plan = LoadPlan(requests=30, concurrency=12, max_seconds=120, max_tokens=16, distinct_texts=3, timeout_s=60)
    with serve.LocalApi(tiny_model, max_waiting=4, quiet=True, table_name=unique_table()) as local:
        figures = load.measure(local.base_url, plan, table_endpoint=local.table_endpoint, local=local)
        items = load.table_items(local.table_endpoint, local.table_name)
        generations = local.generations()

    failed = [check for check in figures["checks"] if not check["passed"]]
    assert not failed
    assert figures["sent"] == 30
    assert set(figures["by_status"]) <= {"200", "202", "429", "503"}
    # Every accepted answer's id is one item of the table; every DONE item was generated once.
    assert figures["answers"] >= 30
    done = [item_id for item_id, stored in items.items() if stored["status"] == "DONE"]
    assert done
    assert all(generations[item_id] == 1 for item_id in done)
    assert all(stored["attempts"] == 1 for stored in items.values() if stored["status"] == "DONE")


def test_a_function_killed_while_idle_is_replaced_and_the_next_request_answered(tiny_model: Path) -> None:
    with serve.LocalApi(tiny_model, env=SHORT_BUDGET, quiet=True, table_name=unique_table()) as local:
        status, _, body = post(local, "/chat", chat("before"))
        assert status == 200, body
        first_pid = local.function_pid
        assert first_pid is not None
        # WHEN the process dies while it waits for its next invocation
        wait_for(lambda: local.runtime.waiting_clients == 1, "the function waiting for its next invocation")
        os.kill(first_pid, signal.SIGKILL)
        wait_for(lambda: local.restarts == 1, "a new function process")
        # THEN the next request reaches the new process, not the dead one's abandoned wait
        status, _, body = post(local, "/chat", chat("after"))
        assert (status, body.get("status")) == (200, "DONE"), body
        assert local.function_pid != first_pid
