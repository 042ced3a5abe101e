"""The requests of a load run on the API (scripts/local/load.py): what is sent (a mixed plan over a small pool of
texts), how one request is sent and its answer read (JSON, or server-sent events to ``data: [DONE]``), and what it
came to (its Outcome)."""

from __future__ import annotations

import http.client
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: What a request may be answered: done or queued, or refused with when to come back.
ACCEPTED = frozenset({200, 202})
REFUSED = frozenset({429, 503})
ALLOWED = ACCEPTED | REFUSED
COMPLETION_PREFIX = "chatcmpl-"
#: Kinds of request the load sends; ``result`` is the GET of an asynchronous request's Location.
KINDS = ("summarize", "translate", "chat", "stream")
SENTENCES = (
    "The river rose after three days of rain, and the old bridge was closed to traffic.",
    "A small bakery on the corner sells bread before sunrise to the workers of the port.",
    "The committee met twice this week to discuss the budget for the new library.",
    "Solar panels on the school roof now cover most of the building's electricity needs.",
    "The train to the mountains leaves every hour and stops at each village on the way.",
    "Volunteers planted two hundred trees along the road between the two towns.",
    "The museum opened a room for children, with models of ships and old maps.",
    "Heavy snow closed the pass, and the drivers waited in the valley until noon.",
)


@dataclass(frozen=True)
class LoadPlan:
    """How much load, of which mix: bounded in count (``requests``) and time (``max_seconds``)."""

    requests: int = 200
    concurrency: int = 24
    max_seconds: float = 180.0
    max_tokens: int = 24
    #: Distinct texts per kind: the same request recurs, and is then answered from the table.
    distinct_texts: int = 6
    #: The share of native requests sent with ``Prefer: respond-async``.
    async_share: float = 0.15
    #: Seconds a caller waits for one answer before it counts as dropped.
    timeout_s: float = 120.0
    seed: int = 34


@dataclass(frozen=True)
class PlannedRequest:
    kind: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one request got: its status (None when the connection dropped or timed out) and what it said."""

    kind: str
    status: int | None
    latency_s: float
    item_id: str | None = None
    cached: bool | None = None
    answer_status: str | None = None
    retry_after: str | None = None
    location: str | None = None
    stream_done: bool | None = None
    error: str | None = None

    @property
    def category(self) -> str:
        """The latency class: table hit, generation, queued, result read, 429, 503, or another answer."""
        if self.status == 429:
            return "refused 429"
        if self.status == 503:
            return "unavailable 503"
        if self.kind == "result" and self.status in ACCEPTED:
            return "result read"
        if self.status == 202:
            return "queued 202"
        if self.status == 200:
            return "table hit" if self.cached else "generation"
        return "no answer" if self.status is None else f"other {self.status}"


def planned_requests(plan: LoadPlan, model_id: str) -> list[PlannedRequest]:
    """The run's requests, in order: each kind in turn at random, texts from a small pool (repeats happen)."""
    chooser = random.Random(plan.seed)
    requests = []
    for _ in range(plan.requests):
        kind = chooser.choice(KINDS)
        text = _text(kind, chooser.randrange(plan.distinct_texts))
        respond_async = kind != "stream" and chooser.random() < plan.async_share
        requests.append(planned_request(kind, text, plan.max_tokens, model_id, respond_async))
    return requests


def _text(kind: str, number: int) -> str:
    first = SENTENCES[number % len(SENTENCES)]
    second = SENTENCES[(number * 3 + 1) % len(SENTENCES)]
    return f"{first} {second} (note {number} for {kind})"


def planned_request(kind: str, text: str, max_tokens: int, model_id: str, respond_async: bool) -> PlannedRequest:
    json_type = {"Content-Type": "application/json"}
    if kind == "stream":
        body = {
            "model": model_id,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return PlannedRequest("stream", "POST", "/v1/chat/completions", body, json_type)
    options = {"max_tokens": max_tokens}
    bodies: dict[str, dict[str, Any]] = {
        "summarize": {"text": text, "options": options},
        "translate": {"text": text, "target_language": "French", "options": options},
        "chat": {"messages": [{"role": "user", "content": text}], "options": options},
    }
    headers = {**json_type, "Prefer": "respond-async"} if respond_async else json_type
    return PlannedRequest("async" if respond_async else kind, "POST", f"/{kind}", bodies[kind], headers)


def send(base_url: str, request: PlannedRequest, timeout_s: float) -> Outcome:
    """Send one request on a connection of its own and read its answer whole (a stream to its end)."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=timeout_s)
    began = time.monotonic()
    try:
        body = json.dumps(request.body).encode("utf-8") if request.body is not None else None
        connection.request(request.method, request.path, body, request.headers)
        response = connection.getresponse()
        outcome = Outcome(request.kind, response.status, 0.0, retry_after=response.getheader("Retry-After"))
        outcome.location = response.getheader("Location")
        if (response.getheader("Content-Type") or "").startswith("text/event-stream"):
            _read_events(response, outcome)
        else:
            _read_answer(response.read(), request, outcome)
    except (OSError, http.client.HTTPException) as exc:  # no answer: dropped, reset or timed out
        outcome = Outcome(request.kind, None, 0.0, error=f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
    outcome.latency_s = time.monotonic() - began
    return outcome


def _read_answer(data: bytes, request: PlannedRequest, outcome: Outcome) -> None:
    try:
        answer = json.loads(data)
    except ValueError:
        outcome.error = "the answer is not JSON"
        return
    if not isinstance(answer, dict):
        return
    if "error" in answer:
        outcome.error = json.dumps(answer["error"])[:300]
        return
    service = answer.get("llm_service") if request.kind == "stream" else answer
    if isinstance(service, dict):
        outcome.item_id = service.get("id")
        outcome.cached = service.get("cached")
        outcome.answer_status = service.get("status")


def _read_events(response: http.client.HTTPResponse, outcome: Outcome) -> None:
    """Read server-sent events to the end: a completion's chunks, its last one's ``llm_service``, [DONE]."""
    outcome.stream_done = False
    for raw in iter(response.readline, b""):
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            outcome.stream_done = True
            continue
        try:
            event = json.loads(data)
        except ValueError:
            outcome.error = "an event is not JSON"
            continue
        if not isinstance(event, dict):
            continue
        if "error" in event:
            outcome.error = json.dumps(event["error"])[:300]
            continue
        if isinstance(event.get("id"), str):
            outcome.item_id = event["id"].removeprefix(COMPLETION_PREFIX)
        service = event.get("llm_service")
        if isinstance(service, dict):
            outcome.cached = service.get("cached")
            outcome.answer_status = service.get("status")
