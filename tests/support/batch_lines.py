"""Batch-file lines as callers write them (OpenAI Batch input, Bedrock records) and the values they carry."""

from __future__ import annotations

from typing import Any

#: Put into caller values by the tests; no problem a line is reported with may contain it.
MARKER = "zq-batch-marker-7d2a"
SERVED = "tiny-phi3"


def openai_line(custom_id: str | None, **body: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": SERVED, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, **body},
    }
    if custom_id is None:
        del line["custom_id"]
    return line


def bedrock_line(record_id: str | None, **model_input: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "recordId": record_id,
        "modelInput": {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 4,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
            **model_input,
        },
    }
    if record_id is None:
        del line["recordId"]
    return line


def numbered(*values: Any) -> list[tuple[int, Any]]:
    return list(enumerate(values, start=1))
