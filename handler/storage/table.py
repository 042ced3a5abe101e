"""The DynamoDB results table: one item per request id, changed only by conditional writes.

An item's life: PENDING (queued) -> RUNNING (claimed: lease owner and expiry) -> DONE, or back to
PENDING when its work failed or was given back, or FAILED after too many attempts. A RUNNING item
whose lease expired may be claimed again; a writer that lost its lease cannot finish the item.
Documents' own writes are in handler/storage/document_writes.py, the table access in handler/storage/dynamo.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from handler.core.errors import StoreError
from handler.core.observability import logger
from handler.storage import dynamo
from handler.storage.document_writes import DocumentWrites
from handler.storage.dynamo import BATCH_ATTEMPTS, KEY, STATUS, STATUS_INDEX, backoff, batches, to_dynamo
from handler.storage.items import Status, StoredItem


class ResultStore(DocumentWrites):
    """Reads and writes result items of one table."""

    def get(self, item_id: str) -> StoredItem | None:
        """The item with this id, read consistently, or None."""
        response = self._call(
            f"read result {item_id}", lambda: self._table.get_item(Key={KEY: item_id}, ConsistentRead=True)
        )
        item = response.get("Item")
        return self._typed(item) if item is not None else None

    def put_pending(self, item_id: str, fields: dict[str, Any]) -> bool:
        """Queue a request as a PENDING item; False when an item for this id already exists."""
        item = self._new_item(item_id, Status.PENDING, {"attempts": 0, **fields})
        written = self._call(
            f"queue request {item_id}",
            lambda: self._table.put_item(
                Item=item, ConditionExpression="attribute_not_exists(#id)", ExpressionAttributeNames={"#id": KEY}
            ),
            conditional=True,
        )
        return written is not None

    def claim(self, item_id: str, owner: str, lease_s: float) -> StoredItem | None:
        """Take a PENDING item, or a RUNNING one whose lease expired; None if it is held or finished.

        An item no version of this service wrote (wrong-typed attributes) is marked FAILED with its problems
        and None returned: it fails alone, as in a listing, not the worker's whole batch.
        """
        try:
            response = self._claim(item_id, owner, lease_s)
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == "ValidationException":
                self._fail_if_malformed(item_id, exc)  # e.g. ADD on an ``attempts`` that is not a number
                return None
            raise
        if response is None:
            return None
        try:
            return self._typed(response["Attributes"])
        except StoreError as malformed:
            self._fail_malformed(item_id, Status.RUNNING, malformed)
            return None

    def _fail_if_malformed(self, item_id: str, refused: StoreError) -> None:
        """After the table refused a claim as invalid: the item's problems make it FAILED, else the error stands."""
        raw = self._call(f"read {item_id}", lambda: self._table.get_item(Key={KEY: item_id}, ConsistentRead=True)).get(
            "Item"
        )
        if raw is None:
            raise refused
        seen = raw.get(STATUS)
        try:
            self._typed(raw)
        except StoreError as malformed:
            if seen in (Status.PENDING, Status.RUNNING):
                self._fail_malformed(item_id, Status(seen), malformed)
                return
        raise refused

    def _claim(self, item_id: str, owner: str, lease_s: float) -> Any:
        now = dynamo.utc_now()
        return self._call(
            f"claim {item_id}",
            lambda: self._table.update_item(
                Key={KEY: item_id},
                UpdateExpression=(
                    "SET #status = :running, lease_owner = :owner, lease_until = :until, updated_at = :now "
                    "ADD attempts :one"
                ),
                ConditionExpression="#status = :pending OR (#status = :running AND lease_until < :now)",
                ExpressionAttributeNames={"#status": STATUS},
                ExpressionAttributeValues={
                    ":running": Status.RUNNING,
                    ":pending": Status.PENDING,
                    ":owner": owner,
                    ":until": (now + timedelta(seconds=lease_s)).isoformat(),
                    ":now": now.isoformat(),
                    ":one": 1,
                },
                ReturnValues="ALL_NEW",
            ),
            conditional=True,
        )

    def claim_to_generate(self, item_id: str, owner: str, lease_s: float, fields: dict[str, Any]) -> bool | None:
        """Take a request to generate it now, for a caller waiting on it: the table is the single-flight lock.

        Creates the item RUNNING under ``owner``'s lease, or takes it when it is PENDING, FAILED, or
        RUNNING with an expired lease. Returns True when this call created the item, False when it took
        an existing one, and None when another holder's lease runs or the item is DONE.
        """
        now = dynamo.utc_now()
        names, values, assignments = self._upsert(now, fields, keep_existing=False)
        names.update({"#id": KEY, "#status": STATUS})
        values.update(
            {
                ":running": Status.RUNNING,
                ":pending": Status.PENDING,
                ":failed": Status.FAILED,
                ":owner": owner,
                ":until": (now + timedelta(seconds=lease_s)).isoformat(),
                ":one": 1,
            }
        )
        assignments += ["#status = :running", "lease_owner = :owner", "lease_until = :until", "updated_at = :now"]
        response = self._call(
            f"claim {item_id}",
            lambda: self._table.update_item(
                Key={KEY: item_id},
                UpdateExpression=f"SET {', '.join(assignments)} ADD attempts :one",
                ConditionExpression="attribute_not_exists(#id) OR #status IN (:pending, :failed) "
                "OR (#status = :running AND lease_until < :now)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_dynamo(values),
                ReturnValues="ALL_OLD",
            ),
            conditional=True,
        )
        if response is None:
            return None
        return not response.get("Attributes")

    def forget(self, item_id: str, owner: str) -> bool:
        """Delete an item this owner created and still holds, when its generation failed (nothing half-written)."""
        deleted = self._call(
            f"remove {item_id}",
            lambda: self._table.delete_item(
                Key={KEY: item_id},
                # A document may have begun to wait on it meanwhile: then it is given back, not removed.
                ConditionExpression="#status = :running AND lease_owner = :owner "
                "AND attribute_not_exists(documents_waiting)",
                ExpressionAttributeNames={"#status": STATUS},
                ExpressionAttributeValues={":running": Status.RUNNING, ":owner": owner},
            ),
            conditional=True,
        )
        return deleted is not None

    def complete(self, item_id: str, owner: str, fields: dict[str, Any]) -> StoredItem | None:
        """Mark a claimed item DONE with its result, only while ``owner`` still holds its lease.

        Returns the finished item, or None when ``owner`` no longer held the lease.
        """
        names = {"#status": STATUS, **{f"#f{i}": name for i, name in enumerate(fields)}}
        values = {
            ":done": Status.DONE,
            ":running": Status.RUNNING,
            ":owner": owner,
            ":now": dynamo.utc_now().isoformat(),
        }
        values.update({f":f{i}": value for i, value in enumerate(fields.values())})
        assignments = ", ".join(f"#f{i} = :f{i}" for i in range(len(fields)))
        response = self._call(
            f"finish {item_id}",
            lambda: self._table.update_item(
                Key={KEY: item_id},
                UpdateExpression=f"SET #status = :done, updated_at = :now, {assignments} "
                "REMOVE lease_owner, lease_until, progress, chunks_left, fanned_out",
                ConditionExpression="#status = :running AND lease_owner = :owner",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_dynamo(values),
                ReturnValues="ALL_NEW",
            ),
            conditional=True,
        )
        return self._typed(response["Attributes"]) if response is not None else None

    def release(self, item_id: str, owner: str, error: str | None, max_attempts: int) -> Status | None:
        """Give a claimed item back: PENDING again, or FAILED with its error after ``max_attempts``.

        Returns the new status, or None when ``owner`` no longer held the lease.
        """
        item = self.get(item_id)
        if item is None or item.status != Status.RUNNING or item.lease_owner != owner:
            return None
        attempts = item.attempts or 0
        status = Status.FAILED if error is not None and attempts >= max_attempts else Status.PENDING
        values: dict[str, Any] = {":status": status, ":running": Status.RUNNING, ":owner": owner}
        values[":now"] = dynamo.utc_now().isoformat()
        update = "SET #status = :status, updated_at = :now"
        if error is not None:
            update += ", #error = :error"
            values[":error"] = error[:2000]
        response = self._call(
            f"release {item_id}",
            lambda: self._table.update_item(
                Key={KEY: item_id},
                UpdateExpression=update + " REMOVE lease_owner, lease_until",
                ConditionExpression="#status = :running AND lease_owner = :owner",
                ExpressionAttributeNames={"#status": STATUS, **({"#error": "error"} if error else {})},
                ExpressionAttributeValues=values,
            ),
            conditional=True,
        )
        return status if response is not None else None

    def items_with_status(self, status: Status, limit: int | None = None) -> Iterator[StoredItem]:
        """Items in a status, oldest first, through the status index (eventually consistent: claims decide).

        RUNNING lists only items whose lease has expired: those are free to claim again.
        """
        kwargs: dict[str, Any] = {"IndexName": STATUS_INDEX, "KeyConditionExpression": Key(STATUS).eq(status)}
        if status == Status.RUNNING:
            kwargs["FilterExpression"] = Attr("lease_until").lt(dynamo.utc_now().isoformat())
        returned = 0
        while True:
            page = self._call(f"list {status} items", lambda: self._table.query(**kwargs))
            for item in page.get("Items", []):
                try:
                    typed = self._typed(item)
                except StoreError as malformed:
                    if status in (Status.PENDING, Status.RUNNING):
                        # Work no version of this service can do fails alone; the others go on.
                        self._fail_malformed(str(item.get(KEY)), status, malformed)
                        continue
                    raise
                yield typed
                returned += 1
                if limit is not None and returned >= limit:
                    return
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _fail_malformed(self, item_id: str, seen: Status, malformed: StoreError) -> None:
        """Mark FAILED, with its problems, a queued item that is not an item of this service."""
        logger.warning("malformed queued item failed", id=item_id, error=malformed.log_message)
        self._call(
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
                    ":now": dynamo.utc_now().isoformat(),
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
            page = self._call(f"count {status} items", lambda: self._table.query(**kwargs))
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
        return {str(item[KEY]): self._typed(item) for item in self._batch_get(item_ids, "read results", {})}

    def _batch_get(self, item_ids: list[str], what: str, projection: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The items of these ids, 100 keys a call; unprocessed keys are read again, with backoff when a call
        read nothing (throttled) and at once when it read some (a response stops at 16 MB)."""
        client = self._table.meta.client
        for chunk in batches(sorted(set(item_ids)), 100):
            request: dict[str, Any] = {
                self.table_name: {"Keys": [{KEY: item_id} for item_id in chunk], "ConsistentRead": True, **projection}
            }
            attempt = 0
            while request:
                response = self._call(what, partial(client.batch_get_item, RequestItems=request))
                read = response.get("Responses", {}).get(self.table_name, [])
                yield from read
                request = response.get("UnprocessedKeys") or {}
                if request and not read:
                    if attempt + 1 >= BATCH_ATTEMPTS:
                        raise StoreError(f"table {self.table_name} left keys unread after {BATCH_ATTEMPTS} attempts")
                    time.sleep(backoff(attempt))
                    attempt += 1

    def put_pending_batch(self, items: list[tuple[str, dict[str, Any]]]) -> int:
        """Write new PENDING items with BatchWriteItem (25 a call), retrying unprocessed items with backoff.

        BatchWriteItem cannot be conditional: callers skip ids that exist (``statuses``) first.
        """
        client = self._table.meta.client
        written = 0
        for chunk in batches(items, 25):
            requests = [
                {"PutRequest": {"Item": self._new_item(i, Status.PENDING, {"attempts": 0, **f})}} for i, f in chunk
            ]
            pending: dict[str, Any] = {self.table_name: requests}
            for attempt in range(BATCH_ATTEMPTS):
                response = self._call("queue requests", partial(client.batch_write_item, RequestItems=pending))
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(backoff(attempt))
            if pending:
                left = len(pending.get(self.table_name, []))
                raise StoreError(
                    f"table {self.table_name} left {left} of {len(chunk)} items unwritten after "
                    f"{BATCH_ATTEMPTS} attempts (throttled); {written} were written before; run again to resume",
                    throttled=True,
                )
            written += len(chunk)
        return written
