"""Queue requests for batch pre-generation: PENDING items in the results table.

    python scripts/enqueue.py requests.jsonl --table TABLE
    python scripts/enqueue.py docs.csv --table TABLE --task translate --target-language Japanese

JSONL: one request per line, the same schema as a direct invoke. CSV: a text column plus task
settings, as columns (style, target_language, max_tokens, temperature, seed) or as options here.
Requests already in the table are skipped; invalid lines are reported with their line numbers.
The endpoint comes from AWS_ENDPOINT_URL_DYNAMODB when set (a local table), else AWS.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from batchtools import DEFAULT_MODEL, build_service
from handler.errors import ServiceError
from handler.queued import EnqueueReport, enqueue

CHUNK = 500
_INT_OPTIONS = ("max_tokens", "seed")
_FLOAT_OPTIONS = ("temperature", "top_p", "repeat_penalty")


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Numbered requests from a JSONL file; a line that is not JSON becomes an error string."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"not JSON: {exc.msg} at column {exc.colno}"


def read_csv(path: Path, task: str, text_column: str, defaults: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    """Numbered requests from a CSV file with a header row (line numbers count the header)."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or text_column not in reader.fieldnames:
            raise SystemExit(f"error: {path} has no {text_column!r} column (columns: {reader.fieldnames})")
        for number, row in enumerate(reader, start=2):
            yield number, _csv_request(row, task, text_column, defaults)


def _csv_request(row: dict[str, str], task: str, text_column: str, defaults: dict[str, Any]) -> Any:
    request: dict[str, Any] = {"task": row.get("task") or task, "text": row[text_column]}
    options: dict[str, Any] = {}
    for name, value in {**defaults, **{k: v for k, v in row.items() if v not in (None, "")}}.items():
        if name in ("style", "target_language"):
            request[name] = value
        elif name in _INT_OPTIONS or name in _FLOAT_OPTIONS:
            try:
                options[name] = int(value) if name in _INT_OPTIONS else float(value)
            except ValueError:
                return f"{name}: not a number ({value!r})"
    if options:
        request["options"] = options
    return request


def enqueue_all(rows: Iterator[tuple[int, Any]], table: str, model: str, queue_url: str | None) -> EnqueueReport:
    """Enqueue in chunks with a progress bar; the report adds up every chunk."""
    service = build_service(table, model, queue_url)
    total = EnqueueReport()
    chunk: list[tuple[int, Any]] = []
    with tqdm(unit="request", desc="enqueue", file=sys.stderr) as progress:

        def flush() -> None:
            valid = [(n, raw) for n, raw in chunk if not isinstance(raw, str)]
            total.invalid.extend((n, raw) for n, raw in chunk if isinstance(raw, str))
            report = enqueue(service, valid)
            total.new += report.new
            total.already_done += report.already_done
            total.already_pending += report.already_pending
            total.duplicates += report.duplicates
            total.invalid.extend(report.invalid)
            progress.update(len(chunk))
            chunk.clear()

        for row in rows:
            chunk.append(row)
            if len(chunk) >= CHUNK:
                flush()
        flush()
    total.invalid.sort()
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="a .jsonl or .csv file")
    parser.add_argument("--table", required=True, help="the results table")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="manifest name or GGUF path of the served model")
    parser.add_argument("--queue-url", help="also send the new ids to this work queue (fan-out to workers)")
    parser.add_argument("--task", default="summarize", choices=["summarize", "translate"], help="CSV: the task")
    parser.add_argument("--text-column", default="text", help="CSV: the column holding the text")
    parser.add_argument("--style", help="CSV: summarize style")
    parser.add_argument("--target-language", help="CSV: translation language")
    parser.add_argument("--max-tokens", type=int, help="CSV: max_tokens")
    args = parser.parse_args(argv)

    if not args.input.is_file():
        parser.error(f"no such file: {args.input}")
    if args.input.suffix.lower() == ".csv":
        defaults = {
            k: v
            for k, v in {
                "style": args.style,
                "target_language": args.target_language,
                "max_tokens": args.max_tokens,
            }.items()
            if v is not None
        }
        rows = read_csv(args.input, args.task, args.text_column, defaults)
    else:
        rows = read_jsonl(args.input)
    try:
        report = enqueue_all(rows, args.table, args.model, args.queue_url)
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(
        f"new: {report.new}  already done: {report.already_done}  already pending: {report.already_pending}  "
        f"repeated in input: {report.duplicates}  invalid: {len(report.invalid)}"
    )
    for line, error in report.invalid:
        print(f"  line {line}: {error}")
    return 1 if report.invalid else 0


if __name__ == "__main__":
    sys.exit(main())
