"""SQS on the moto server for tests: a work queue, its messages taken off it, and the worker's events."""

from __future__ import annotations

import json
from typing import Any

from scripts.local.moto_server import local_client


def client(endpoint_url: str) -> Any:
    return local_client("sqs", endpoint_url)


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


class EventSource:
    """SQS's event source mapping as Lambda runs it for the worker: messages received (invisible for the queue's
    visibility timeout), the function invoked with them, and only those it did not report in
    ``batchItemFailures`` deleted; an invocation that failed or died deletes nothing, so every message of it is
    delivered again once its visibility timeout has passed."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url

    def receive(self, wait_s: int = 0, most: int = 10) -> list[dict[str, Any]]:
        return list(
            self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=most,
                WaitTimeSeconds=wait_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
        )

    @staticmethod
    def event(messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The worker's event for received messages: their ids, bodies and receive counts as SQS gives them."""
        records = []
        for message in messages:
            one = record(message)
            one["receiptHandle"] = message["ReceiptHandle"]
            one["attributes"]["ApproximateReceiveCount"] = message.get("Attributes", {}).get(
                "ApproximateReceiveCount", "1"
            )
            records.append(one)
        return {"Records": records}

    def settle(self, messages: list[dict[str, Any]], answer: Any) -> list[dict[str, Any]]:
        """After an invocation: delete the messages it did not report failed; the failed ones (all of them when it
        has no answer: killed, crashed) come back after their visibility timeout. Returns the deleted ones."""
        if not isinstance(answer, dict) or "batchItemFailures" not in answer:
            return []
        failed = {failure["itemIdentifier"] for failure in answer["batchItemFailures"]}
        done = [message for message in messages if message["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done)],
            )
        return done

    def depth(self) -> int:
        """Messages on the queue, visible or in flight."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
