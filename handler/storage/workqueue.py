"""The SQS queue that fans queued requests out to worker invocations (only ids travel; the table holds the work)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from handler.core.errors import StoreError

_SQS_BATCH = 10


class WorkQueue:
    """Sends ids of PENDING items to the worker queue."""

    def __init__(self, queue_url: str, client: Any | None = None) -> None:
        self.queue_url = queue_url
        self._client = client if client is not None else boto3.client("sqs")

    def send(self, item_ids: Iterable[str]) -> int:
        """Queue the ids; returns how many were sent. Failed entries are retried once, then reported."""
        ids = list(item_ids)
        for start in range(0, len(ids), _SQS_BATCH):
            chunk = ids[start : start + _SQS_BATCH]
            entries: list[Any] = [
                {"Id": str(n), "MessageBody": json.dumps({"id": item_id})} for n, item_id in enumerate(chunk)
            ]
            for _ in range(2):
                try:
                    response = self._client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
                except (ClientError, BotoCoreError) as exc:
                    raise StoreError(f"cannot send work to queue {self.queue_url}: {exc}") from exc
                failed = {entry["Id"] for entry in response.get("Failed", [])}
                entries = [entry for entry in entries if entry["Id"] in failed]
                if not entries:
                    break
            if entries:
                raise StoreError(f"queue {self.queue_url} refused {len(entries)} messages after a retry")
        return len(ids)
