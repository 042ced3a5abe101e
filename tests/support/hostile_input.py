"""What hostile and careless callers send, marked so that a log line holding any of it is found (hostile JSON schemas
among it); the logs as text."""

from __future__ import annotations

import json
from typing import Any

import pytest

#: Put into every user value the tests send; no log line may contain it.
MARKER = "zq-marker-7f3a"


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured log record with all its fields (message and the structured keys), as text."""
    return "\n".join(json.dumps(vars(record), default=str) for record in caplog.records)


#: Sixty-four messages of 6,000 characters: under every field limit, over what one item holds.
OVERSIZED_CHAT = {
    "task": "chat",
    "messages": [{"role": "user", "content": f"{MARKER} " + "é" * 6000} for _ in range(64)],
}


def with_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A chat request whose response format is ``schema``."""
    return {
        "task": "chat",
        "messages": [{"role": "user", "content": "Describe a person."}],
        "options": {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
    }


#: Patterns llama-cpp-python's converter never finishes: a POSIX class, a stray ] or }.
LOOPING_PATTERNS = ["^[[:alpha:]]+$", "^a]b$", "^a}b$"]
