"""`make serve` as the tests drive it: the API with the tiny model, its function's table calls through the fault
proxy (a result's write can be held: the request is then deterministically mid-invocation, its item RUNNING), and a
client that fails instead of hanging."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scripts.local import load, serve
from tests.support.fault_proxy import COMPLETE, Fault, FaultProxy

#: Seconds a test's client waits for an answer: a request that would hang fails instead.
CLIENT_TIMEOUT_S = 60
#: A short API budget, so that a claim's lease (the budget and the safety margin) runs out within the test.
SHORT_BUDGET = {
    "API_BUDGET_S": "3",
    "STREAM_BUDGET_S": "3",
    "SAFETY_MARGIN_S": "1",
    # The tiny model is fast: no request is predicted past the budget and queued instead of generated.
    "EXPECTED_PROMPT_TOKENS_PER_S": "5000",
    "EXPECTED_EVAL_TOKENS_PER_S": "5000",
    "EXPECTED_LOAD_S": "0",
}


@contextlib.contextmanager
def api_behind_proxy(tiny_model: Path, **options: Any) -> Iterator[tuple[serve.LocalApi, FaultProxy]]:
    """The API served with the tiny model, its function's table calls going through the fault proxy."""
    with FaultProxy() as proxy:
        env = {**SHORT_BUDGET, "AWS_ENDPOINT_URL_DYNAMODB": proxy.endpoint_url}
        with serve.LocalApi(tiny_model, env=env, quiet=True, table_name=unique_table(), **options) as local:
            proxy.route_to(local.table_endpoint)
            yield local, proxy


def hold_result_writes(proxy: FaultProxy) -> Fault:
    """The function's next result write held (its item RUNNING, its execution environment busy) until released."""
    return proxy.add(Fault("dynamodb", "UpdateItem", "hold", contains=COMPLETE))


def unique_table() -> str:
    """A table of this test's own: moto keeps one state per process, shared by every API the tests start."""
    return f"{serve.TABLE}-{uuid.uuid4().hex[:8]}"


def post(local: serve.LocalApi, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST a JSON body; the status, headers and JSON answer (a client that waits CLIENT_TIMEOUT_S at most)."""
    connection = http.client.HTTPConnection("127.0.0.1", urlsplit(local.base_url).port, timeout=CLIENT_TIMEOUT_S)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), json.loads(answer.read())
    finally:
        connection.close()


def chat(text: str, max_tokens: int = 16) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "options": {"max_tokens": max_tokens}}


class Background:
    """A request sent on a thread of its own; its answer (or the exception it raised) when it is done."""

    def __init__(self, local: serve.LocalApi, path: str, body: dict[str, Any]) -> None:
        self.answer: tuple[int, dict[str, str], dict[str, Any]] | None = None
        self.raised: BaseException | None = None
        self._thread = threading.Thread(target=self._send, args=(local, path, body), daemon=True)
        self._thread.start()

    def _send(self, local: serve.LocalApi, path: str, body: dict[str, Any]) -> None:
        try:
            self.answer = post(local, path, body)
        except BaseException as exc:
            self.raised = exc

    def result(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        self._thread.join(CLIENT_TIMEOUT_S + 5)
        if self.raised is not None:
            raise self.raised
        assert self.answer is not None, "no answer"
        return self.answer


def wait_for(condition: Any, what: str, limit_s: float = CLIENT_TIMEOUT_S) -> None:
    """Poll a state (not a duration) until it holds; fail after ``limit_s`` rather than hang."""
    give_up_at = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < give_up_at, f"never came: {what}"
        time.sleep(0.02)


def item(local: serve.LocalApi, item_id: str) -> dict[str, Any]:
    return load.table_items(local.table_endpoint, local.table_name)[item_id]
