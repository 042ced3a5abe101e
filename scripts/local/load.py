"""Bounded load on the API process (`make load`): many callers at once on `make serve`, more than it can generate.

    python -m scripts.local.load [--model models/test/tiny-phi3.gguf] [--requests 200] [--concurrency 24]
    python -m scripts.local.load --url http://127.0.0.1:3000 [--table-endpoint http://127.0.0.1:PORT]

Starts the API itself (scripts/local/serve.py: one execution environment, a line of ``--max-waiting`` requests)
with the tiny test model, or sends to a running `make serve` (``--url``, loopback only). ``--concurrency`` callers
send ``--requests`` requests between them, then stop; the run also stops after ``--max-seconds``. The requests are
mixed: POST /summarize, /translate and /chat, POST /v1/chat/completions streamed (server-sent events, read to
``data: [DONE]``), some with ``Prefer: respond-async`` (202, then one GET of its Location); their texts come from
a small pool, so that many are answered from the table. A caller answered 429 or 503 waits its Retry-After.

Checked afterwards: every request answered 200, 202, or 429/503 with Retry-After (never a dropped connection,
never a 500); the results table holds exactly the accepted requests' ids, and every DONE item was generated
once (the function's log) in one attempt; the function never restarted; memory stayed bounded (the function's
and this process's RSS, sampled during the run). Printed as a table and written to bench-results/load.json with
requests per second and the p50/p99 latency of table hits, generations and refusals. Exit status 1 when a check
fails. The figures are this machine's.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import platform
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from boto3.dynamodb.types import TypeDeserializer

from scripts.batch.export import percentile
from scripts.local import serve
from scripts.local.load_requests import (
    ACCEPTED,
    ALLOWED,
    REFUSED,
    LoadPlan,
    Outcome,
    PlannedRequest,
    planned_request,
    planned_requests,
    send,
)
from scripts.local.moto_server import dynamodb_client
from scripts.repository import ROOT

DEFAULT_MODEL = ROOT / "models" / "test" / "tiny-phi3.gguf"
DEFAULT_OUT = ROOT / "bench-results" / "load.json"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


# -- the requests -------------------------------------------------------------------------------------------


# -- the run ------------------------------------------------------------------------------------------------


@dataclass
class LoadRun:
    outcomes: list[Outcome]
    wall_s: float
    sent: int
    planned: int


def run_load(base_url: str, plan: LoadPlan, model_id: str) -> LoadRun:
    """``plan.concurrency`` callers send the planned requests until all are sent or ``max_seconds`` pass.

    A 202 with a Location is followed by one GET of it; a 429 or 503 makes its caller wait its Retry-After.
    """
    requests = planned_requests(plan, model_id)
    numbers = itertools.count()
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    began = time.monotonic()
    stop_at = began + plan.max_seconds

    def caller() -> None:
        while time.monotonic() < stop_at:
            with lock:
                number = next(numbers)
            if number >= len(requests):
                return
            outcome = send(base_url, requests[number], plan.timeout_s)
            follow_up = None
            if outcome.status == 202 and outcome.location:
                follow_up = send(base_url, PlannedRequest("result", "GET", outcome.location), plan.timeout_s)
                if follow_up.item_id is None:
                    follow_up.item_id = outcome.location.rstrip("/").rsplit("/", 1)[-1]
            with lock:
                outcomes.extend(o for o in (outcome, follow_up) if o is not None)
            wait_s = _retry_after_s(follow_up or outcome)
            if wait_s:
                time.sleep(min(wait_s, max(stop_at - time.monotonic(), 0.0)))

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(plan.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = min(next(numbers), len(requests))
    return LoadRun(outcomes, time.monotonic() - began, sent, len(requests))


def _retry_after_s(outcome: Outcome) -> float:
    if outcome.status not in REFUSED or outcome.retry_after is None:
        return 0.0
    with contextlib.suppress(ValueError):
        return max(float(outcome.retry_after), 0.0)
    return 0.0


class MemorySampler:
    """The resident memory of processes, sampled in the background: start, peak and end, in MB."""

    def __init__(self, processes: dict[str, Callable[[], int | None]], every_s: float = 0.2) -> None:
        self._processes = processes
        self._every_s = every_s
        self.samples: dict[str, list[float]] = {name: [] for name in processes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        for name, pid_of in self._processes.items():
            pid = pid_of()
            rss = rss_mb(pid) if pid is not None else None
            if rss is not None:
                self.samples[name].append(rss)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def figures(self) -> dict[str, dict[str, float]]:
        return {
            name: {"start_mb": values[0], "peak_mb": max(values), "end_mb": values[-1], "samples": len(values)}
            for name, values in self.samples.items()
            if values
        }


def rss_mb(pid: int) -> float | None:
    """A process's resident set size (Linux /proc), or None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def table_items(endpoint_url: str, table_name: str = serve.TABLE) -> dict[str, dict[str, Any]]:
    """Every item of the results table, by id (a consistent scan)."""
    deserializer = TypeDeserializer()
    pages = dynamodb_client(endpoint_url).get_paginator("scan").paginate(TableName=table_name, ConsistentRead=True)
    items = {}
    for page in pages:
        for raw in page["Items"]:
            item = {name: deserializer.deserialize(value) for name, value in raw.items()}
            items[str(item["id"])] = item
    return items


# -- the checks and the report ------------------------------------------------------------------------------


def checks(
    run: LoadRun,
    items: dict[str, dict[str, Any]] | None,
    generations: Counter[str] | None,
    memory: dict[str, dict[str, float]] | None,
    restarts: int | None,
    warm_up_ids: set[str],
    max_rss_growth_mb: float,
) -> list[Check]:
    """What must hold after a load run; ``None`` inputs are what this run could not see (a `make serve` elsewhere)."""
    outcomes = run.outcomes
    statuses = Counter(o.status for o in outcomes)
    found: list[Check] = []
    not_allowed = {str(status): count for status, count in statuses.items() if status not in ALLOWED}
    found.append(Check("every request answered 200, 202, 429 or 503", not not_allowed, _counts(not_allowed)))
    dropped = statuses.get(None, 0)
    found.append(Check("no dropped connection", dropped == 0, f"{dropped} dropped" if dropped else ""))
    server_errors = sum(count for status, count in statuses.items() if status is not None and status >= 500) - (
        statuses.get(503, 0)
    )
    found.append(Check("no 500 (no 5xx but 503)", server_errors == 0, f"{server_errors}" if server_errors else ""))
    bare = sum(1 for o in outcomes if o.status in REFUSED and not o.retry_after)
    found.append(Check("429 and 503 carry Retry-After", bare == 0, f"{bare} without" if bare else ""))
    streams = [o for o in outcomes if o.kind == "stream" and o.status == 200]
    unfinished = sum(1 for o in streams if not o.stream_done or o.error)
    detail = f"{unfinished} of {len(streams)} did not" if unfinished else f"{len(streams)} streams"
    found.append(Check("streams end with data: [DONE]", unfinished == 0, detail))
    accepted = [o for o in outcomes if o.status in ACCEPTED]
    unnamed = sum(1 for o in accepted if not o.item_id)
    found.append(Check("every accepted answer names its id", unnamed == 0, f"{unnamed} without" if unnamed else ""))
    if items is not None:
        accepted_ids = {o.item_id for o in accepted if o.item_id} | warm_up_ids
        missing, extra = accepted_ids - set(items), set(items) - accepted_ids
        detail = f"{len(items)} items; missing {sorted(missing)[:3]}, unexplained {sorted(extra)[:3]}"
        found.append(
            Check("the table holds every accepted request once, and nothing else", not missing and not extra, detail)
        )
        done = {item_id: item for item_id, item in items.items() if item.get("status") == "DONE"}
        retried = sorted(item_id for item_id, item in done.items() if int(item.get("attempts") or 0) != 1)
        found.append(Check("DONE items took one attempt", not retried, f"{len(retried)} did not" if retried else ""))
        if generations is not None:
            twice = sorted(item_id for item_id in done if generations.get(item_id, 0) != 1)
            unstored = sorted(item_id for item_id in generations if item_id not in done)
            found.append(
                Check(
                    "every DONE item generated once, every generation stored",
                    not twice and not unstored,
                    f"{len(generations)} generations for {len(done)} DONE items"
                    + (f"; not once: {twice[:3]}, not stored: {unstored[:3]}" if twice or unstored else ""),
                )
            )
    if restarts is not None:
        found.append(Check("the function never restarted", restarts == 0, f"{restarts} restarts" if restarts else ""))
    for name, figures in (memory or {}).items():
        growth = figures["peak_mb"] - figures["start_mb"]
        found.append(
            Check(
                f"memory bounded: {name} grew at most {max_rss_growth_mb:g} MB",
                growth <= max_rss_growth_mb,
                f"{figures['start_mb']:.0f} -> peak {figures['peak_mb']:.0f} -> end {figures['end_mb']:.0f} MB",
            )
        )
    return found


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))


def percentile_ms(values: list[float], share: float) -> float | None:
    """A percentile of latencies in seconds, in milliseconds (the batch report's percentile); None for none."""
    return round(percentile(values, share) * 1000, 1) if values else None


def report(
    run: LoadRun,
    found: list[Check],
    plan: LoadPlan,
    memory: dict[str, dict[str, float]] | None,
    target: dict[str, Any],
) -> dict[str, Any]:
    by_category: dict[str, list[float]] = {}
    for outcome in run.outcomes:
        by_category.setdefault(outcome.category, []).append(outcome.latency_s)
    statuses = Counter("dropped" if o.status is None else str(o.status) for o in run.outcomes)
    accepted = sum(1 for o in run.outcomes if o.status in ACCEPTED)
    return {
        "note": "absolute figures of the machine that ran it (see machine); loopback, one execution environment",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "target": target,
        "plan": asdict(plan),
        "planned": run.planned,
        "sent": run.sent,
        "answers": len(run.outcomes),
        "stopped_by": "count" if run.sent >= run.planned else "time",
        "wall_s": round(run.wall_s, 2),
        "requests_per_s": round(len(run.outcomes) / run.wall_s, 2) if run.wall_s else None,
        "accepted_per_s": round(accepted / run.wall_s, 2) if run.wall_s else None,
        "by_status": dict(sorted(statuses.items())),
        "latency_ms": {
            category: {
                "count": len(values),
                "p50": percentile_ms(values, 0.50),
                "p99": percentile_ms(values, 0.99),
            }
            for category, values in sorted(by_category.items())
        },
        "memory": memory,
        "checks": [asdict(check) for check in found],
        "passed": all(check.passed for check in found),
        "requests": [_record(outcome) for outcome in run.outcomes],
    }


def _record(outcome: Outcome) -> dict[str, Any]:
    """One request in the report: what it was, what it got, how long it took."""
    return {
        "kind": outcome.kind,
        "status": outcome.status,
        "latency_ms": round(outcome.latency_s * 1000, 1),
        "answer": outcome.category,
        "cached": outcome.cached,
        "id": outcome.item_id,
        "retry_after": outcome.retry_after,
        **({"stream_done": outcome.stream_done} if outcome.stream_done is not None else {}),
        **({"error": outcome.error} if outcome.error else {}),
    }


def print_report(figures: dict[str, Any], out: Any = sys.stdout) -> None:
    """The report as aligned tables: latencies by class, answers by status, memory, checks."""

    def table(header: list[str], rows: list[list[str]]) -> None:
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
        for row in [header, *rows]:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)), file=out)
        print(file=out)

    print(
        f"{figures['answers']} answers to {figures['sent']} of {figures['planned']} requests in {figures['wall_s']} s "
        f"(stopped by {figures['stopped_by']}): {figures['requests_per_s']} answers/s, "
        f"{figures['accepted_per_s']} accepted/s; {figures['machine']['cpus']} CPUs, this machine's figures\n",
        file=out,
    )
    rows = [
        [category, str(values["count"]), _ms(values["p50"]), _ms(values["p99"])]
        for category, values in figures["latency_ms"].items()
    ]
    table(["answer", "count", "p50 ms", "p99 ms"], rows)
    table(["status", "count"], [[status, str(count)] for status, count in figures["by_status"].items()])
    if figures["memory"]:
        memory_rows = [
            [name, f"{values['start_mb']:.1f}", f"{values['peak_mb']:.1f}", f"{values['end_mb']:.1f}"]
            for name, values in figures["memory"].items()
        ]
        table(["RSS (MB)", "start", "peak", "end"], memory_rows)
    check_rows = [["PASS" if c["passed"] else "FAIL", c["name"], c["detail"]] for c in figures["checks"]]
    table(["", "check", "detail"], check_rows)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# -- the whole run ------------------------------------------------------------------------------------------


def served_model(base_url: str, timeout_s: float) -> str:
    """The model id the API serves (GET /v1/models), which a chat completion request names."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=timeout_s)
    try:
        connection.request("GET", "/v1/models")
        models = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    return str(models["data"][0]["id"])


def warm_up(base_url: str, model_id: str, timeout_s: float) -> Outcome:
    """One generation before the run: the model loaded, the memory baseline taken after it."""
    request = planned_request("chat", "Warm up: say one word.", 8, model_id, respond_async=False)
    return send(base_url, request, timeout_s)


def measure(
    base_url: str,
    plan: LoadPlan,
    *,
    table_endpoint: str | None,
    local: serve.LocalApi | None = None,
    max_rss_growth_mb: float = 256.0,
) -> dict[str, Any]:
    """Warm up, run the load (sampling memory when the API runs here), read the table, check, report."""
    model_id = served_model(base_url, plan.timeout_s)
    warmed = warm_up(base_url, model_id, plan.timeout_s)
    if warmed.status != 200 or not warmed.item_id:
        raise RuntimeError(f"the warm-up request was answered {warmed.status}: {warmed.error}")
    processes: dict[str, Callable[[], int | None]] = {}
    if local is not None:
        processes = {"function": lambda: local.function_pid, "front (this process)": os.getpid}
    with MemorySampler(processes) as sampler:
        run = run_load(base_url, plan, model_id)
    memory = sampler.figures() if local is not None else None
    table_name = local.table_name if local is not None else serve.TABLE
    items = table_items(table_endpoint, table_name) if table_endpoint else None
    generations = local.generations() if local is not None else None
    restarts = local.restarts if local is not None else None
    found = checks(run, items, generations, memory, restarts, {warmed.item_id}, max_rss_growth_mb)
    target = {"url": base_url, "started_here": local is not None, "table_checked": items is not None}
    if local is not None:
        target |= {"model": local.model.name, "max_waiting": local.admission.max_waiting}
        target |= {"max_wait_s": local.admission.max_wait_s}
    return report(run, found, plan, memory, target)


@contextlib.contextmanager
def _target(args: argparse.Namespace) -> Iterator[tuple[str, str | None, serve.LocalApi | None]]:
    if args.url:
        yield args.url.rstrip("/"), args.table_endpoint, None
        return
    api = serve.LocalApi(args.model.resolve(), max_waiting=args.max_waiting, max_wait_s=args.max_wait_s, quiet=True)
    with api as local:
        yield local.base_url, local.table_endpoint, local


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF model the API serves (started here)")
    parser.add_argument("--url", help="a running `make serve` on loopback, instead of starting one here")
    parser.add_argument("--table-endpoint", help="with --url: its table's endpoint (`make serve` prints it)")
    parser.add_argument("--requests", type=int, default=LoadPlan.requests, help="requests to send (default: 200)")
    parser.add_argument("--concurrency", type=int, default=LoadPlan.concurrency, help="callers at once (default: 24)")
    parser.add_argument("--max-seconds", type=float, default=LoadPlan.max_seconds, help="stop after (default: 180)")
    parser.add_argument("--max-tokens", type=int, default=LoadPlan.max_tokens, help="per request (default: 24)")
    parser.add_argument("--max-waiting", type=int, default=serve.DEFAULT_MAX_WAITING, help="the API's waiting line")
    parser.add_argument("--max-wait-s", type=float, default=serve.DEFAULT_MAX_WAIT_S, help="the API's longest wait")
    parser.add_argument("--max-rss-growth-mb", type=float, default=256.0, help="memory check's bound (default 256)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON report (default: bench-results/)")
    args = parser.parse_args(argv)
    if args.url and urlsplit(args.url).hostname not in LOOPBACK:
        parser.error("--url must be a loopback address (127.0.0.1, localhost, ::1)")
    if not args.url and not args.model.is_file():
        parser.error(f"model file not found: {args.model} (`make` builds the tiny test model)")
    if args.requests < 1 or args.concurrency < 1 or args.max_seconds <= 0 or args.max_tokens < 1:
        parser.error("--requests, --concurrency, --max-seconds and --max-tokens take positive values")
    plan = LoadPlan(
        requests=args.requests,
        concurrency=args.concurrency,
        max_seconds=args.max_seconds,
        max_tokens=args.max_tokens,
        timeout_s=min(LoadPlan.timeout_s, args.max_seconds),
    )
    with _target(args) as (base_url, table_endpoint, local):
        growth_mb = args.max_rss_growth_mb
        figures = measure(base_url, plan, table_endpoint=table_endpoint, local=local, max_rss_growth_mb=growth_mb)
    print_report(figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
