"""The results table's items read and written whole: by id, by status, counted; new PENDING items, one or a batch.

An item no version of this service wrote (wrong-typed attributes) is failed here when it is queued work
(PENDING or RUNNING), so it fails alone and the rest of a listing or a claim goes on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Any

from boto3.dynamodb.conditions import Attr, Key

from handler.core.errors import StoreError
from handler.core.observability import logger
from handler.domain.answers import Status
from handler.domain.stored_item import StoredItem
from handler.storage import attributes
from handler.storage.attributes import KEY, STATUS, STATUS_INDEX
from handler.storage.dynamo_table import BATCH_ATTEMPTS, DynamoTable, backoff, batches


class ItemAccess:
    """Reads of result items, new PENDING items, and malformed queued items failed."""

    def __init__(self, dynamo: DynamoTable) -> None:
        self._dynamo = dynamo
        self._table = dynamo.resource  # the boto3 Table its calls go to

    def get(self, item_id: str) -> StoredItem | None:
        """The item with this id, read consistently, or None."""
        response = self._dynamo.call(
            f"read result {item_id}", lambda: self._table.get_item(Key={KEY: item_id}, ConsistentRead=True)
        )
        item = response.get("Item")
        return self._dynamo.typed(item) if item is not None else None

    def holder(self, item_id: str) -> tuple[str, str | None] | None:
        """An item's status and lease owner, read consistently and as stored (an item too malformed to read whole
        still has them), or None when there is no item."""
        response = self._dynamo.call(
            f"read the holder of {item_id}",
            lambda: self._table.get_item(
                Key={KEY: item_id},
                ConsistentRead=True,
                ProjectionExpression="#status, lease_owner",
                ExpressionAttributeNames={"#status": STATUS},
            ),
        )
        item = response.get("Item")
        if item is None:
            return None
        owner = item.get("lease_owner")
        return str(item.get(STATUS)), str(owner) if owner is not None else None

    def put_pending(self, item_id: str, fields: dict[str, Any]) -> bool:
        """Queue a request as a PENDING item; False when an item for this id already exists."""
        item = self._dynamo.new_item(item_id, Status.PENDING, {"attempts": 0, **fields})
        written = self._dynamo.call(
            f"queue request {item_id}",
            lambda: self._table.put_item(
                Item=item, ConditionExpression="attribute_not_exists(#id)", ExpressionAttributeNames={"#id": KEY}
            ),
            conditional=True,
        )
        return written is not None

    def items_with_status(self, status: Status, limit: int | None = None) -> Iterator[StoredItem]:
        """Items in a status, oldest first, through the status index (eventually consistent: claims decide).

        RUNNING lists only items whose lease has expired: those are free to claim again.
        """
        kwargs: dict[str, Any] = {"IndexName": STATUS_INDEX, "KeyConditionExpression": Key(STATUS).eq(status)}
        if status == Status.RUNNING:
            kwargs["FilterExpression"] = Attr("lease_until").lt(attributes.utc_now().isoformat())
        returned = 0
        while True:
            page = self._dynamo.call(f"list {status} items", lambda: self._table.query(**kwargs))
            for item in page.get("Items", []):
                try:
                    typed = self._dynamo.typed(item)
                except StoreError as malformed:
                    if status in (Status.PENDING, Status.RUNNING):
                        # Work no version of this service can do fails alone; the others go on.
                        self.fail_malformed(str(item.get(KEY)), status, malformed)
                        continue
                    raise
                yield typed
                returned += 1
                if limit is not None and returned >= limit:
                    return
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def fail_malformed(self, item_id: str, seen: Status, malformed: StoreError) -> None:
        """Mark FAILED, with its problems, a queued item that is not an item of this service."""
        logger.warning("malformed queued item failed", id=item_id, error=malformed.log_message)
        self._dynamo.call(
            f"fail {item_id}",
            lambda: self._table.update_item(
                Key={KEY: item_id},
                UpdateExpression="SET #status = :failed, #error = :error, updated_at = :now "
                "REMOVE lease_owner, lease_until",
                ConditionExpression="#status = :seen",
                ExpressionAttributeNames={"#status": STATUS, "#error": "error"},
                ExpressionAttributeValues={
                    ":failed": Status.FAILED,
                    ":error": malformed.message[:2000],
                    ":now": attributes.utc_now().isoformat(),
                    ":seen": seen,
                },
            ),
            conditional=True,
        )

    def count_with_status(self, status: Status) -> int:
        """How many items are in a status (through the status index)."""
        kwargs: dict[str, Any] = {
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": Key(STATUS).eq(status),
            "Select": "COUNT",
        }
        total = 0
        while True:
            page = self._dynamo.call(f"count {status} items", lambda: self._table.query(**kwargs))
            total += int(page.get("Count", 0))
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def statuses(self, item_ids: list[str]) -> dict[str, str]:
        """The status of each id that has an item (BatchGetItem, 100 ids a call, unprocessed keys retried)."""
        projection = {
            "ProjectionExpression": "#id, #status",
            "ExpressionAttributeNames": {"#id": KEY, "#status": STATUS},
        }
        return {str(item[KEY]): str(item[STATUS]) for item in self._batch_get(item_ids, "read statuses", projection)}

    def get_many(self, item_ids: list[str]) -> dict[str, StoredItem]:
        """The item of each id that has one, read consistently (BatchGetItem, 100 ids a call), by id."""
        return {str(item[KEY]): self._dynamo.typed(item) for item in self._batch_get(item_ids, "read results", {})}

    def _batch_get(self, item_ids: list[str], what: str, projection: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The items of these ids, 100 keys a call; unprocessed keys are read again, with backoff when a call
        read nothing (throttled) and at once when it read some (a response stops at 16 MB)."""
        name = self._dynamo.name
        client = self._table.meta.client
        for chunk in batches(sorted(set(item_ids)), 100):
            request: dict[str, Any] = {
                name: {"Keys": [{KEY: item_id} for item_id in chunk], "ConsistentRead": True, **projection}
            }
            attempt = 0
            while request:
                response = self._dynamo.call(what, partial(client.batch_get_item, RequestItems=request))
                read = response.get("Responses", {}).get(name, [])
                yield from read
                request = response.get("UnprocessedKeys") or {}
                if request and not read:
                    if attempt + 1 >= BATCH_ATTEMPTS:
                        raise StoreError(f"table {name} left keys unread after {BATCH_ATTEMPTS} attempts")
                    time.sleep(backoff(attempt))
                    attempt += 1

    def put_pending_batch(self, items: list[tuple[str, dict[str, Any]]]) -> int:
        """Write new PENDING items with BatchWriteItem (25 a call), retrying unprocessed items with backoff.

        BatchWriteItem cannot be conditional: callers skip ids that exist (``statuses``) first.
        """
        name = self._dynamo.name
        client = self._table.meta.client
        written = 0
        for chunk in batches(items, 25):
            requests = [
                {"PutRequest": {"Item": self._dynamo.new_item(i, Status.PENDING, {"attempts": 0, **f})}}
                for i, f in chunk
            ]
            pending: dict[str, Any] = {name: requests}
            for attempt in range(BATCH_ATTEMPTS):
                response = self._dynamo.call("queue requests", partial(client.batch_write_item, RequestItems=pending))
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(backoff(attempt))
            if pending:
                left = len(pending.get(name, []))
                raise StoreError(
                    f"table {name} left {left} of {len(chunk)} items unwritten after "
                    f"{BATCH_ATTEMPTS} attempts (throttled); {written} were written before; run again to resume",
                    throttled=True,
                )
            written += len(chunk)
        return written
