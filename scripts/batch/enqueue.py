"""Queue requests for batch pre-generation: PENDING items in the results table.

    python -m scripts.batch.enqueue requests.jsonl --table TABLE
    python -m scripts.batch.enqueue docs.csv --table TABLE --task translate --target-language Japanese

JSONL: one request per line, in one of three formats (handler/formats/batch_lines.py), decided by the file's
first JSON object: the same schema as a direct invoke; OpenAI Batch input lines ({"custom_id", "method":
"POST", "url": "/v1/chat/completions", "body"}, the body naming the served model, as GET /v1/models
does); or Bedrock batch records ({"recordId", "modelInput"}, an Anthropic Messages body). CSV: a text
column plus task settings, as columns (style, target_language, max_tokens, temperature, seed) or as
options here.
Requests already in the table are skipped; invalid lines are reported with their line numbers and the
fields and limits at fault, never with what the line holds (it may be anyone's text, or a spreadsheet
formula). Each line is decoded on its own: a line that is not UTF-8 is reported, the others are queued.
A UTF-8 byte order mark and CRLF line ends are accepted.
The endpoint comes from AWS_ENDPOINT_URL_DYNAMODB when set (a local table), else AWS.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from handler.core.errors import ServiceError
from handler.formats.batch_lines import FORMAT_NAMES, BatchFormat, read_lines
from handler.formats.jsonl import Unreadable, decoded, jsonl_values, numbered_lines
from handler.formats.jsonl import not_utf8 as _not_utf8
from handler.usecases.queueing import QueueingReport, queue_requests
from scripts.batch.service import build_service, served_model
from scripts.repository import SERVED_MODEL

CHUNK = 500
_INT_OPTIONS = ("max_tokens", "seed")
_FLOAT_OPTIONS = ("temperature", "top_p", "repeat_penalty")


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Numbered requests from a JSONL file; a line that cannot be read is ``Unreadable``."""
    with path.open("rb") as handle:
        yield from jsonl_values(handle)


def read_batch(path: Path, served_model: str) -> tuple[BatchFormat, list[tuple[int, Any]]]:
    """A JSONL batch file's format and its numbered native requests; an invalid line is ``Unreadable``.

    Native requests, OpenAI Batch input lines and Bedrock batch records are read (handler/formats/batch_lines.py);
    an invalid line's reason names the line's fields, never what they hold.
    """
    with path.open("rb") as handle:
        fmt, lines = read_lines(jsonl_values(handle), served_model)
    return fmt, [(line.number, line.request if line.problem is None else Unreadable(line.problem)) for line in lines]


def read_csv(path: Path, task: str, text_column: str, defaults: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    """Numbered requests from a CSV file with a header row; a request's number is the line it starts on.

    Lines are decoded one by one: a record with a line that is not UTF-8, or that is not readable CSV,
    is ``Unreadable`` and the records after it are still read.
    """
    not_utf8: dict[int, UnicodeDecodeError] = {}

    def text_lines(handle: BinaryIO) -> Iterator[str]:
        for number, raw in numbered_lines(handle):
            line = decoded(number, raw)
            if isinstance(line, UnicodeDecodeError):
                not_utf8[number] = line
                line = raw.decode("utf-8", errors="replace")  # keeps the record structure for the next lines
            yield line

    with path.open("rb") as handle:
        reader = csv.reader(text_lines(handle))
        header = next(reader, None)
        if 1 in not_utf8:
            raise SystemExit(f"error: {path}: line 1, the header, is {_not_utf8(not_utf8[1]).reason}")
        if header is None or text_column not in header:
            raise SystemExit(f"error: {path} has no {text_column!r} column (columns: {header})")
        while True:
            first = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # csv's messages name the problem, not the field
                yield first, Unreadable(f"not readable CSV: {exc}")
                continue
            bad = [number for number in range(first, reader.line_num + 1) if number in not_utf8]
            if bad:
                reason = _not_utf8(not_utf8[bad[0]]).reason
                yield first, Unreadable(reason if bad[0] == first else f"its line {bad[0]} is {reason}")
            elif row:  # a blank line is no record
                # As csv.DictReader: a missing cell is None, the last of repeated column names wins.
                cells = {name: row[index] if index < len(row) else None for index, name in enumerate(header)}
                yield first, _csv_request(cells, task, text_column, defaults)


def _csv_request(row: dict[str, str | None], task: str, text_column: str, defaults: dict[str, Any]) -> Any:
    request: dict[str, Any] = {"task": row.get("task") or task, "text": row[text_column]}
    options: dict[str, Any] = {}
    for name, value in {**defaults, **{k: v for k, v in row.items() if v not in (None, "")}}.items():
        if name in ("style", "target_language"):
            request[name] = value
        elif name in _INT_OPTIONS or name in _FLOAT_OPTIONS:
            try:
                options[name] = int(value) if name in _INT_OPTIONS else float(value)
            except ValueError:
                return Unreadable(
                    f"{name}: not a number (expected {'an integer' if name in _INT_OPTIONS else 'a number'})"
                )
    if options:
        request["options"] = options
    return request


def enqueue_all(rows: Iterable[tuple[int, Any]], table: str, model: str, queue_url: str | None) -> QueueingReport:
    """Enqueue in chunks with a progress bar; the report adds up every chunk."""
    service = build_service(table, model, queue_url)
    total = QueueingReport()
    chunk: list[tuple[int, Any]] = []
    with tqdm(unit="request", desc="enqueue", file=sys.stderr) as progress:

        def flush() -> None:
            # The service checks each request and reports it without what it holds (QueueingReport.invalid).
            valid = [(number, raw) for number, raw in chunk if not isinstance(raw, Unreadable)]
            total.invalid.extend((number, raw.reason) for number, raw in chunk if isinstance(raw, Unreadable))
            report = queue_requests(service, valid)
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
    parser.add_argument("--model", default=SERVED_MODEL, help="manifest name or GGUF path of the served model")
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
        rows: Iterable[tuple[int, Any]] = read_csv(args.input, args.task, args.text_column, defaults)
        fmt: BatchFormat = "native"
    else:
        fmt, rows = read_batch(args.input, served_model(args.model))
    try:
        report = enqueue_all(rows, args.table, args.model, args.queue_url)
    except ServiceError as exc:
        print(f"error: {exc.log_message}", file=sys.stderr)
        return 1
    if fmt != "native":
        print(f"format: {FORMAT_NAMES[fmt]}")
    print(
        f"new: {report.new}  already done: {report.already_done}  already pending: {report.already_pending}  "
        f"repeated in input: {report.duplicates}  invalid: {len(report.invalid)}"
    )
    for line, error in report.invalid:
        print(f"  line {line}: {error}")
    return 1 if report.invalid else 0


if __name__ == "__main__":
    sys.exit(main())
