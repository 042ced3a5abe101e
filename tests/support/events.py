"""The sample events of events/, and the requests every entry point must refuse (with the message it gives)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scripts.repository import ROOT

EVENTS = ROOT / "events"


def load_event(name: str) -> dict[str, Any]:
    """An event from events/ as a dict."""
    return dict(json.loads((EVENTS / name).read_text(encoding="utf-8")))


def s3_put_event(client: Any, bucket: str, key: str) -> dict[str, Any]:
    """The S3 notification for an object just put (the shape of `sam local generate-event s3 put`)."""
    head = client.head_object(Bucket=bucket, Key=key)
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "batch-files",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": key.replace(" ", "+"),
                        "size": head["ContentLength"],
                        "eTag": head["ETag"].strip('"'),
                        "sequencer": "0A1B2C3D4E5F678901",
                    },
                },
            }
        ]
    }


#: Requests the service refuses, each with a part of the message it answers.
BAD_EVENTS = [
    pytest.param({"task": "poem", "text": "x"}, "unknown task", id="unknown-task"),
    pytest.param({"task": "summarize"}, "text: Field required", id="missing-text"),
    pytest.param({"task": "summarize", "text": ""}, "text: String should have at least 1", id="empty-text"),
    pytest.param({"task": "summarize", "text": ["a"]}, "text: Input should be a valid string", id="wrong-type"),
    pytest.param({"task": "summarize", "text": "x", "tone": "dry"}, "tone: Extra inputs", id="unknown-field"),
    pytest.param({"task": "translate", "text": "x", "target_language": ""}, "target_language", id="empty-language"),
    pytest.param({"task": "chat", "messages": [{"role": "system", "content": "hi"}]}, "role 'user'", id="no-user-turn"),
    pytest.param({"task": "summarize", "text": "x", "options": {"max_tokens": 0}}, "max_tokens", id="max-tokens-low"),
    pytest.param(
        {"task": "summarize", "text": "x", "options": {"max_tokens": 5000}}, "max_tokens", id="max-tokens-high"
    ),
]
