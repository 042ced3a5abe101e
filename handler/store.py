"""The DynamoDB results table: one item per request id, changed only by conditional writes.

boto3 lives here and in the work queue, nowhere else. The endpoint comes from the SDK's own
configuration (``AWS_ENDPOINT_URL_DYNAMODB`` for a local table), so the same code runs against AWS,
DynamoDB Local and moto.

An item's life: PENDING (queued) -> RUNNING (claimed: lease owner and expiry) -> DONE, or back to
PENDING when its work failed or was given back, or FAILED after too many attempts. A RUNNING item
whose lease expired may be claimed again; a writer that lost its lease cannot finish the item.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from handler.errors import StoreError, describe_problems, field_problems
from handler.items import Status, StoredItem
from handler.observability import logger
from handler.schemas import DYNAMODB_SMALLEST_MAGNITUDE, MAX_ITEM_BYTES

# Item attribute and index names; template.yaml defines the same table (a test keeps them equal).
KEY = "id"
STATUS = "status"
CREATED_AT = "created_at"
EXPIRES_AT = "expires_at"
STATUS_INDEX = "status-created_at-index"
#: The lease owner of a document whose chunks the workers are generating: no invocation holds it.
WAITING_FOR_CHUNKS = "waiting-for-chunks"

_BATCH_ATTEMPTS = 6
_SMALLEST_NUMBER = Decimal(str(DYNAMODB_SMALLEST_MAGNITUDE))
_THROTTLING = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}


def utc_now() -> datetime:
    return datetime.now(UTC)


def _dynamo_number(text: str) -> Decimal:
    # DynamoDB numbers stop near 1e-130: a smaller magnitude (a temperature of 1e-300) is stored as 0.
    number = Decimal(text)
    return Decimal(0) if number != 0 and abs(number) < _SMALLEST_NUMBER else number


def to_dynamo(value: Any) -> Any:
    """Plain JSON data as DynamoDB wants it (floats as Decimal)."""
    return json.loads(json.dumps(value), parse_float=_dynamo_number)


def from_dynamo(value: Any) -> Any:
    """DynamoDB data back to plain JSON types (Decimal to int or float)."""
    if isinstance(value, dict):
        return {key: from_dynamo(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_dynamo(item) for item in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def result_too_large(fields: dict[str, Any]) -> str | None:
    """Why a finished item cannot be written (DynamoDB's item size limit), or None when it fits."""
    size = len(json.dumps(to_dynamo(fields), default=str).encode("utf-8"))
    if size > MAX_ITEM_BYTES - 4096:  # the id, status, times and lease beside the fields
        return f"result is {size} bytes, over DynamoDB's {MAX_ITEM_BYTES // 1024} KB item limit"
    return None


class ResultStore:
    """Reads and writes result items of one table."""

    def __init__(self, table_name: str, table: Any | None = None, ttl_days: int | None = None) -> None:
        if table is None:
            # Standard retries with a bounded count: throttling is retried, then reported clearly.
            resource = boto3.resource("dynamodb", config=Config(retries={"max_attempts": 5, "mode": "standard"}))
            table = resource.Table(table_name)
        self.table_name = table_name
        self._table = table
        self._ttl_days = ttl_days

    def _call(self, what: str, operation: Callable[[], Any], conditional: bool = False) -> Any:
        """Run one table operation; errors become StoreError, a failed condition (when expected) None."""
        try:
            return operation()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if conditional and code == "ConditionalCheckFailedException":
                return None
            raise StoreError(
                f"cannot {what} in table {self.table_name}: {_reason(exc)}", throttled=code in _THROTTLING
            ) from exc
        except BotoCoreError as exc:
            raise StoreError(f"cannot {what} in table {self.table_name}: {exc}") from exc

    def get(self, item_id: str) -> StoredItem | None:
        """The item with this id, read consistently, or None."""
        response = self._call(
            f"read result {item_id}", lambda: self._table.get_item(Key={KEY: item_id}, ConsistentRead=True)
        )
        item = response.get("Item")
        return self._typed(item) if item is not None else None

    def _typed(self, raw: dict[str, Any]) -> StoredItem:
        """An item as read, typed; one that is not an item of this service is a store fault naming it."""
        try:
            return StoredItem.model_validate(from_dynamo(raw))
        except ValidationError as exc:
            # The item's values may be a caller's text: the answer names them, the log line does not.
            problems = field_problems(exc.errors(include_url=False))
            malformed = f"item {raw.get(KEY)!r} in table {self.table_name} is malformed"
            raise StoreError(
                f"{malformed}: {describe_problems(problems)}",
                log_message=f"{malformed}: {describe_problems(problems, with_values=False)}",
            ) from exc

    def _new_item(self, item_id: str, status: Status, fields: dict[str, Any]) -> dict[str, Any]:
        now = utc_now()
        item = {KEY: item_id, STATUS: status, CREATED_AT: now.isoformat(), "updated_at": now.isoformat(), **fields}
        if self._ttl_days:
            item[EXPIRES_AT] = int((now + timedelta(days=self._ttl_days)).timestamp())
        return dict(to_dynamo(item))

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
        now = utc_now()
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
        now = utc_now()
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

    def _upsert(
        self, now: datetime, fields: dict[str, Any], keep_existing: bool
    ) -> tuple[dict[str, str], dict[str, Any], list[str]]:
        """Names, values (``:now`` among them) and SET clauses of an UpdateItem that may create its item: the
        ``fields`` (left as they are on an existing item with ``keep_existing``), and the creation time and
        expiry (TTL) an item created by the write gets."""
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values: dict[str, Any] = {":now": now.isoformat()}
        values.update({f":f{i}": value for i, value in enumerate(fields.values())})
        written = "#f{i} = if_not_exists(#f{i}, :f{i})" if keep_existing else "#f{i} = :f{i}"
        assignments = [
            f"{CREATED_AT} = if_not_exists({CREATED_AT}, :now)",
            *(written.format(i=i) for i in range(len(fields))),
        ]
        if self._ttl_days:
            assignments.append(f"{EXPIRES_AT} = if_not_exists({EXPIRES_AT}, :expires)")
            values[":expires"] = int((now + timedelta(days=self._ttl_days)).timestamp())
        return names, values, assignments

    def note_progress(self, item_id: str, progress: dict[str, Any]) -> None:
        """Record how far a RUNNING item's work has come (a document's chunks); nothing when it is not RUNNING."""
        self._call(
            f"note progress of {item_id}",
            lambda: self._table.update_item(
                Key={KEY: item_id},
                UpdateExpression="SET progress = :progress, updated_at = :now",
                ConditionExpression="#status = :running",
                ExpressionAttributeNames={"#status": STATUS},
                ExpressionAttributeValues=to_dynamo(
                    {":progress": progress, ":running": Status.RUNNING, ":now": utc_now().isoformat()}
                ),
            ),
            conditional=True,
        )

    # -- documents fanned out to the workers (handler/documents.py) --------------------------------

    def wait_for_chunks(
        self,
        document_id: str,
        owner: str,
        chunk_ids: set[str],
        progress: dict[str, Any],
        fanned_out: dict[str, int],
        wait_s: float,
    ) -> bool:
        """Hand a claimed document over to its chunks: it stays RUNNING, held by no invocation, until the last
        of ``chunk_ids`` ends (``chunk_ended``) or ``wait_s`` passes. False when ``owner`` lost the lease."""
        until = (utc_now() + timedelta(seconds=wait_s)).isoformat()
        written = self._call(
            f"hand {document_id} to its chunks",
            lambda: self._table.update_item(
                Key={KEY: document_id},
                UpdateExpression="SET chunks_left = :chunks, progress = :progress, fanned_out = :fanned, "
                "lease_owner = :waiting, lease_until = :until, updated_at = :now",
                ConditionExpression="#status = :running AND lease_owner = :owner",
                ExpressionAttributeNames={"#status": STATUS},
                ExpressionAttributeValues={
                    ":chunks": set(chunk_ids),
                    **to_dynamo(
                        {
                            ":progress": progress,
                            ":fanned": fanned_out,
                            ":waiting": WAITING_FOR_CHUNKS,
                            ":until": until,
                            ":now": utc_now().isoformat(),
                            ":running": Status.RUNNING,
                            ":owner": owner,
                        }
                    ),
                },
            ),
            conditional=True,
        )
        return written is not None

    def await_chunk(self, chunk_id: str, document_id: str, fields: dict[str, Any]) -> StoredItem:
        """Queue a chunk's request unless it exists, and note the document waiting on it, in one write.

        Returns the chunk's item as it is after the write: a DONE or FAILED one ended before the note was
        made, so whoever ended it could not tell the document.
        """
        names, values, assignments = self._upsert(utc_now(), fields, keep_existing=True)
        names["#status"] = STATUS
        values.update({":pending": Status.PENDING, ":zero": 0})
        assignments += [
            "#status = if_not_exists(#status, :pending)",
            "attempts = if_not_exists(attempts, :zero)",
            "updated_at = if_not_exists(updated_at, :now)",
        ]
        response = self._call(
            f"queue chunk {chunk_id}",
            lambda: self._table.update_item(
                Key={KEY: chunk_id},
                UpdateExpression=f"SET {', '.join(assignments)} ADD documents_waiting :document",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={**to_dynamo(values), ":document": {document_id}},
                ReturnValues="ALL_NEW",
            ),
        )
        return self._typed(response["Attributes"])

    def chunk_ended(self, document_id: str, chunk_id: str) -> bool:
        """Count a chunk of a waiting document as ended: True for the one call that ended its last chunk.

        The chunk leaves the document's set in a conditional write, so each chunk counts once however
        often it is reported, and exactly one report empties the set (DynamoDB then drops the attribute).
        """
        response = self._call(
            f"count chunk {chunk_id} of {document_id}",
            lambda: self._table.update_item(
                Key={KEY: document_id},
                UpdateExpression="DELETE chunks_left :chunk "
                "SET progress.done = progress.done + :one, updated_at = :now",
                ConditionExpression="contains(chunks_left, :chunk_id)",
                ExpressionAttributeValues={
                    ":chunk": {chunk_id},
                    ":chunk_id": chunk_id,
                    ":one": 1,
                    ":now": utc_now().isoformat(),
                },
                ReturnValues="ALL_NEW",
            ),
            conditional=True,
        )
        return response is not None and "chunks_left" not in response["Attributes"]

    def wake(self, document_id: str) -> bool:
        """Queue again a document whose chunks have all ended (PENDING); its wait does not count as an attempt."""
        response = self._call(
            f"queue {document_id} again",
            lambda: self._table.update_item(
                Key={KEY: document_id},
                UpdateExpression="SET #status = :pending, updated_at = :now ADD attempts :minus_one "
                "REMOVE lease_owner, lease_until",
                ConditionExpression="#status = :running AND lease_owner = :waiting "
                "AND attribute_not_exists(chunks_left)",
                ExpressionAttributeNames={"#status": STATUS},
                ExpressionAttributeValues={
                    ":pending": Status.PENDING,
                    ":running": Status.RUNNING,
                    ":waiting": WAITING_FOR_CHUNKS,
                    ":now": utc_now().isoformat(),
                    ":minus_one": -1,
                },
            ),
            conditional=True,
        )
        return response is not None

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
        values = {":done": Status.DONE, ":running": Status.RUNNING, ":owner": owner, ":now": utc_now().isoformat()}
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
        values[":now"] = utc_now().isoformat()
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
            kwargs["FilterExpression"] = Attr("lease_until").lt(utc_now().isoformat())
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
                    ":now": utc_now().isoformat(),
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
        for chunk in _batches(sorted(set(item_ids)), 100):
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
                    if attempt + 1 >= _BATCH_ATTEMPTS:
                        raise StoreError(f"table {self.table_name} left keys unread after {_BATCH_ATTEMPTS} attempts")
                    time.sleep(_backoff(attempt))
                    attempt += 1

    def put_pending_batch(self, items: list[tuple[str, dict[str, Any]]]) -> int:
        """Write new PENDING items with BatchWriteItem (25 a call), retrying unprocessed items with backoff.

        BatchWriteItem cannot be conditional: callers skip ids that exist (``statuses``) first.
        """
        client = self._table.meta.client
        written = 0
        for chunk in _batches(items, 25):
            requests = [
                {"PutRequest": {"Item": self._new_item(i, Status.PENDING, {"attempts": 0, **f})}} for i, f in chunk
            ]
            pending: dict[str, Any] = {self.table_name: requests}
            for attempt in range(_BATCH_ATTEMPTS):
                response = self._call("queue requests", partial(client.batch_write_item, RequestItems=pending))
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(_backoff(attempt))
            if pending:
                left = len(pending.get(self.table_name, []))
                raise StoreError(
                    f"table {self.table_name} left {left} of {len(chunk)} items unwritten after "
                    f"{_BATCH_ATTEMPTS} attempts (throttled); {written} were written before; run again to resume",
                    throttled=True,
                )
            written += len(chunk)
        return written


def _reason(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, as AWS recommends for unprocessed batch items."""
    return float(random.uniform(0, min(2.0, 0.05 * 2**attempt)))


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
