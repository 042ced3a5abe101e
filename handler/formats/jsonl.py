"""JSONL files read line by line: each line's bytes, its UTF-8 text and its JSON value, a bad line named by number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

#: How JSONL files are written and served.
JSONL_MEDIA_TYPE = "application/x-ndjson"


def jsonl_bytes(records: list[Any]) -> bytes:
    """Records as a JSONL file: one JSON value per line, UTF-8, every line ended."""
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")


@dataclass(frozen=True)
class Unreadable:
    """A line that holds no request, with the reason (never what the line holds)."""

    reason: str


def numbered_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Numbered physical lines of a file opened in binary mode, ending at LF, CRLF or CR (ends kept)."""
    number = 0
    for chunk in handle:  # binary iteration splits at LF only; splitlines also splits at CR
        for line in chunk.splitlines(keepends=True):
            number += 1
            yield number, line


def decoded(number: int, line: bytes) -> str | UnicodeDecodeError:
    """One line as text (the first may start with a UTF-8 byte order mark), or why it is not UTF-8."""
    try:
        return line.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return exc


def not_utf8(exc: UnicodeDecodeError) -> Unreadable:
    return Unreadable(f"not valid UTF-8 (invalid byte at offset {exc.start} of the line)")


def json_value(line: str) -> Any:
    """A line's JSON value, or why it has none (never the line's content).

    As handler/entry/api_request_body.check_json does for API bodies: a \\u escape of a lone surrogate is no text
    (the request id and the table refuse it), and nesting or numbers too deep or long to read are refused.
    """
    try:
        value = json.loads(line)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        return Unreadable(f"not JSON: {exc.msg} at column {exc.colno}")
    except UnicodeEncodeError:
        return Unreadable("has a \\u escape of an unpaired UTF-16 surrogate (not text)")
    except RecursionError:
        return Unreadable("not JSON this script reads: nested too deeply")
    except ValueError:  # int() refuses numbers of more than 4300 digits
        return Unreadable("not JSON this script reads: a number too long to read")
    return value


def jsonl_values(handle: BinaryIO) -> Iterator[tuple[int, Any]]:
    """Numbered JSON values of a JSONL file (blank lines skipped); a line that has none is ``Unreadable``."""
    for number, raw in numbered_lines(handle):
        line = decoded(number, raw)
        if isinstance(line, UnicodeDecodeError):
            yield number, not_utf8(line)
        elif line.strip():
            yield number, json_value(line)
