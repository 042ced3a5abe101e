"""Invoke the function locally through the real Lambda runtime, with DynamoDB in moto.

    python -m scripts.local.invoke events/summarize.json [events/translate.json ...] --model models/x.gguf

All events go to one emulator, in order, so the first invocation is cold and the later ones warm.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from scripts.local.emulator import LambdaEmulator, LambdaEmulatorError
from scripts.local.moto_server import MotoDynamoDB, create_table_from_template, dynamodb_client
from scripts.repository import ROOT, TEMPLATE

DEFAULT_HANDLER = "handler.entry.direct.lambda_handler"
DEFAULT_TABLE = "llm-results-local"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", nargs="+", type=Path, metavar="EVENT.json", help="events to invoke, in order")
    parser.add_argument("--model", type=Path, help="GGUF model file (default: $MODEL_PATH)")
    parser.add_argument(
        "--endpoint", help="DynamoDB endpoint to use instead of starting moto (default: $AWS_ENDPOINT_URL_DYNAMODB)"
    )
    parser.add_argument("--table", default=DEFAULT_TABLE, help=f"results table name (default: {DEFAULT_TABLE})")
    parser.add_argument("--template", type=Path, default=TEMPLATE, help="template defining ResultsTable")
    parser.add_argument("--handler", default=DEFAULT_HANDLER, help=f"handler to run (default: {DEFAULT_HANDLER})")
    parser.add_argument("--timeout", type=int, default=900, help="function timeout in seconds (default: 900)")
    parser.add_argument("--log", type=Path, help="emulator log file (default: a new temporary file)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra function environment variable (repeatable; overrides the defaults)",
    )
    args = parser.parse_args(argv)

    model = args.model or (Path(os.environ["MODEL_PATH"]) if os.environ.get("MODEL_PATH") else None)
    if model is None:
        parser.error("no model: pass --model PATH or set MODEL_PATH")
    if not model.is_file():
        parser.error(f"model file not found: {model}")
    args.model = model.resolve()
    for event in args.events:
        if not event.is_file():
            parser.error(f"event file not found: {event}")
    if not args.template.is_file():
        parser.error(f"template not found: {args.template}")
    args.extra_env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--env wants KEY=VALUE, got {item!r}")
        args.extra_env[key] = value
    args.endpoint = args.endpoint or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or None
    return args


def _plain(value: Any) -> Any:
    """JSON stand-ins for what TypeDeserializer yields besides JSON types."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "value"):  # boto3's Binary wrapper
        return _plain(value.value)
    raise TypeError(f"cannot show {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=_plain)


def stored_item(endpoint: str, table: str, item_id: str) -> dict[str, Any] | None:
    """The item the function stored under ``item_id``, as plain Python values."""
    from boto3.dynamodb.types import TypeDeserializer

    response = dynamodb_client(endpoint).get_item(TableName=table, Key={"id": {"S": item_id}}, ConsistentRead=True)
    item = response.get("Item")
    if item is None:
        return None
    deserializer = TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in item.items()}


def error_of(response: dict[str, Any]) -> str | None:
    """A one-line description when ``response`` is a Lambda or service error, else None."""
    if "errorMessage" in response or "errorType" in response:
        return f"{response.get('errorType', 'Error')}: {response.get('errorMessage', '')}"
    if response.get("error"):
        return f"service error: {json.dumps(response['error'], ensure_ascii=False)}"
    return None


def asks_to_store(event: dict[str, Any]) -> bool:
    """Whether the request in ``event`` has its answer stored: unless its options say ``"store": false``."""
    options = event.get("options")
    return not (isinstance(options, dict) and options.get("store") is False)


def llama_system_info() -> str:
    """The instruction sets the llama.cpp of this Python (the function's too) was compiled for."""
    import llama_cpp

    return str(llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip())


def run(args: argparse.Namespace) -> int:
    events = []
    for path in args.events:
        try:
            events.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except json.JSONDecodeError as exc:
            print(f"{path}: not valid JSON: {exc}", file=sys.stderr)
            return 2
    log_path = args.log
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="local-invoke-", suffix=".log")
        os.close(handle)
        log_path = Path(name)

    failures = 0
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint
        if endpoint is None:
            endpoint = stack.enter_context(MotoDynamoDB()).endpoint_url
            print(f"DynamoDB (moto): {endpoint}")
        else:
            print(f"DynamoDB: {endpoint}")
        try:
            create_table_from_template(endpoint, args.table, args.template)
        except (BotoCoreError, ClientError, ValueError) as exc:
            print(f"ERROR: cannot create table {args.table} on {endpoint}: {exc}", file=sys.stderr)
            return 1
        print(f"Table: {args.table}\nEmulator log: {log_path}")
        print(f"llama.cpp: {llama_system_info()}")

        env = {
            "MODEL_PATH": str(args.model),
            "TABLE_NAME": args.table,
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
            "POWERTOOLS_SERVICE_NAME": "llm-service",
            "POWERTOOLS_METRICS_NAMESPACE": "LlmService",
            "PYTHONPATH": str(ROOT),
            **args.extra_env,
        }
        emulator = LambdaEmulator(
            args.handler, env=env, cwd=ROOT, python=sys.executable, log_path=log_path, timeout_s=args.timeout
        )
        try:
            with emulator:
                for number, (path, event) in enumerate(events, start=1):
                    print(f"\n=== {path} ({number}/{len(events)}) ===")
                    response = emulator.invoke(event, timeout=args.timeout + 60)
                    print(dumps(response))
                    error = error_of(response)
                    if error is not None:
                        failures += 1
                        print(f"ERROR: {path}: {error}", file=sys.stderr)
                        continue
                    item_id = response.get("id")
                    if not asks_to_store(event):
                        # The answer above is all there is: the function stores nothing for this request.
                        print('--- not stored (the event says "store": false) ---')
                    elif isinstance(item_id, str):
                        item = stored_item(endpoint, args.table, item_id)
                        if item is None:
                            failures += 1
                            print(f"ERROR: {path}: no item {item_id!r} in table {args.table}", file=sys.stderr)
                        else:
                            print(f"--- stored item ({args.table}) ---")
                            print(dumps(item))
        except LambdaEmulatorError as exc:
            failures += 1
            print(f"ERROR: {exc}", file=sys.stderr)
    print(f"\nEmulator log: {log_path}")
    if failures:
        print(f"{failures} of {len(events)} invocation(s) failed", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
