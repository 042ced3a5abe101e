"""The local loop's invoke step: events through `sam local invoke`, each answer checked against the local table.

The first event runs again at the end: its answer must come from the table (``cached``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.repository import ROOT
from scripts.sam.aws import LocalAws, local_aws
from scripts.sam.loop import BUILT_TEMPLATE, LOCAL_DIR, LoopError, log, sam_command, sam_environment

SEED_EVENTS = ("events/summarize.json", "events/translate.json", "events/chat-solve.json")


@dataclass
class Invocation:
    response: dict[str, Any]
    seconds: float
    logs: str


def sam_invoke(function: str, event: Path, env_file: Path, template: Path = BUILT_TEMPLATE) -> Invocation:
    """`sam local invoke FUNCTION --event EVENT --env-vars ENV_FILE`: the function's JSON answer and its logs."""
    command = [
        *sam_command(),
        "local",
        "invoke",
        function,
        "--template-file",
        str(template),
        "--event",
        str(event),
        "--env-vars",
        str(env_file),
        "--skip-pull-image",
    ]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=sam_environment(), capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    try:
        response = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        response = None
    if result.returncode != 0 or not isinstance(response, dict):
        raise LoopError(
            f"sam local invoke {function} --event {event} failed (exit {result.returncode}); stdout:\n"
            f"{result.stdout[-2000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return Invocation(response, seconds, result.stderr)


def generate_event(*words: str) -> dict[str, Any]:
    """`sam local generate-event WORDS...` as a dict."""
    result = subprocess.run(
        [*sam_command(), "local", "generate-event", *words],
        env=sam_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LoopError(f"sam local generate-event {' '.join(words)} failed: {result.stderr[-1000:]}")
    event: dict[str, Any] = json.loads(result.stdout)
    return event


def invoke(args: argparse.Namespace) -> int:
    events = [Path(e) for e in (args.events or SEED_EVENTS)]
    failures = 0
    with local_aws(LOCAL_DIR / "invoke-env.json") as aws:
        log(f"DynamoDB and SQS (moto): {aws.endpoint_url}, table {aws.table}")
        first: dict[str, Any] | None = None
        runs = [*events, events[0]]
        for number, event in enumerate(runs, start=1):
            repeat = number == len(runs)
            label = f"{event} again" if repeat else str(event)
            done = sam_invoke("GenerateFunction", event, aws.env_file)
            answer = done.response
            print(f"\n=== sam local invoke GenerateFunction --event {label} ({done.seconds:.1f} s) ===")
            print(json.dumps(answer, indent=2, ensure_ascii=False))
            problem = check_answer(answer, aws)
            if (
                repeat
                and first is not None
                and not problem
                and (answer.get("cached") is not True or answer.get("id") != first.get("id"))
            ):
                problem = "the repeated event was not answered from the table (cached is not true)"
            if number == 1:
                first = answer
            if problem:
                failures += 1
                print(f"ERROR: {label}: {problem}", file=sys.stderr)
            else:
                print(f"--- {label}: stored, {'cached' if answer.get('cached') else 'generated'}")
    if failures:
        print(f"{failures} of {len(runs)} invocations failed", file=sys.stderr)
        return 1
    return 0


def check_answer(answer: Mapping[str, Any], aws: LocalAws) -> str | None:
    """None when ``answer`` is a DONE answer with text, stored in the local table; else what is wrong."""
    if "error" in answer or "errorMessage" in answer:
        return f"error answer: {json.dumps(answer.get('error') or answer)[:1000]}"
    if answer.get("status") != "DONE" or not str(answer.get("output", "")).strip():
        return f"no finished output (status {answer.get('status')!r})"
    item = aws.item(str(answer.get("id")))
    if item is None or item.get("status") != "DONE":
        return f"item {answer.get('id')} is not DONE in table {aws.table}: {item and item.get('status')}"
    return None
