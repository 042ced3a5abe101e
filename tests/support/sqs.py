"""SQS on the moto server for tests: a work queue, its messages taken off it, and the worker's events."""

from __future__ import annotations

import json
from typing import Any


def client(endpoint_url: str) -> Any:
    import boto3

    return boto3.client(
        "sqs",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message now on the queue, taken off it (as the worker function's event source does)."""
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        messages.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)],
        )
    return messages


def ids(messages: list[dict[str, Any]]) -> list[str]:
    """The request ids the work messages carry."""
    return [json.loads(m["Body"])["id"] for m in messages]


def record(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the worker function's SQS event carries it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": "handle",
        "body": message["Body"],
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "0",
            "SenderId": "x",
            "ApproximateFirstReceiveTimestamp": "0",
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work",
        "awsRegion": "us-east-1",
    }


def event_for(item_ids: list[str]) -> dict[str, Any]:
    """The worker's SQS event of one work message per id."""
    return {"Records": [record({"MessageId": f"m-{n}", "Body": json.dumps({"id": i})}) for n, i in enumerate(item_ids)]}
