"""The suite-wide check that user text is never logged.

Every request any test sends is recorded as it reaches the service's one parser (``parse_request``),
valid or not, with every API request's path as the resolver gets it; every log record of the process is
kept, and when the session ends, no record may contain any string the requests carried. Each user text is
its own marker: the check needs no special texts, so it holds for every test, the hostile ones and the
ordinary ones alike.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

#: Shorter strings (task names, roles, "Hi.") occur in logs by themselves; longer ones only by leaking.
MIN_LENGTH = 12
#: A leak shows the start of a value (a quoted value is cut after its first characters).
PROBE_LENGTH = 40


def _schema_names() -> frozenset[str]:
    """The field names of every request type, and JSON Schema's own keywords: keys a log line may name."""
    from pydantic import BaseModel

    from handler.domain.json_schema import SCHEMA_KEYWORDS
    from handler.domain.requests import ChatRequest, SummarizeRequest, TranslateRequest

    names: set[str] = set(SCHEMA_KEYWORDS)
    models: list[type[BaseModel]] = [SummarizeRequest, TranslateRequest, ChatRequest]
    while models:
        model = models.pop()
        for name, info in model.model_fields.items():
            names.add(name)
            for inner in getattr(info.annotation, "__args__", (info.annotation,)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    models.append(inner)
    return frozenset(names)


class UserTexts:
    """The strings callers sent, as probes to look for in the logs: every value, and every key that is not a
    field of the request schema (an unknown key's name is the caller's text too)."""

    def __init__(self) -> None:
        self.probes: set[str] = set()
        self._fields = _schema_names()

    def record(self, value: Any) -> None:
        # A stack of its own, not recursion: hostile requests nest thousands of levels deep.
        stack = [value]
        while stack:
            current = stack.pop()
            if isinstance(current, str):
                if len(current) >= MIN_LENGTH:
                    self.probes.add(current[:PROBE_LENGTH])
            elif isinstance(current, dict):
                for key, item in current.items():
                    if key not in self._fields:
                        stack.append(key)
                    stack.append(item)
            elif isinstance(current, list | tuple):
                stack.extend(current)

    def record_path(self, path: Any) -> None:
        """An API request's path: its segments are the caller's (a model name, a route that is none), except
        the ids this service made (a request's sha256, a completion's, file's or batch's id), which log lines name."""
        if isinstance(path, str):
            for segment in path.split("/"):
                if not _ID.fullmatch(segment):
                    self.record(segment)


#: Ids of results, completions, files and batches, well-formed or not: hexadecimal, as this service makes them (log
#: lines name ids; a made-up one of the same alphabet is no text of the caller's).
_ID = re.compile(r"(chatcmpl-|file-|batch_)?[0-9a-fA-F]*")


class RecordedLogs(logging.Handler):
    """Every log record of the process, with all its fields, as text."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {key: value for key, value in vars(record).items() if key not in ("args", "exc_info")}
        self.lines.append(json.dumps(fields, default=str))


def leaks(probes: set[str], lines: list[str]) -> list[tuple[str, str]]:
    """Each (user text, log line) where the line contains the text (compared as JSON would escape it)."""
    found = []
    for probe in probes:
        escaped = json.dumps(probe)[1:-1]
        for line in lines:
            if escaped in line:
                found.append((probe, line[:300]))
                break
    return found
