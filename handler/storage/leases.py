"""Leases on the results table's items: who may generate a request now, and who may finish it.

An item's life: PENDING (queued) -> RUNNING (claimed: lease owner and expiry) -> DONE, or back to
PENDING when its work failed or was given back, or FAILED after too many attempts. A RUNNING item
whose lease expired may be claimed again; a writer that lost its lease cannot finish the item. Every
change is a conditional write, so the table is the lock, for queued work and for callers waiting alike.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from handler.core.errors import StoreError
from handler.domain.answers import Status
from handler.domain.stored_item import StoredItem
from handler.storage import attributes
from handler.storage.attributes import KEY, STATUS, to_dynamo
from handler.storage.dynamo_table import DynamoTable
from handler.storage.item_access import ItemAccess


class Leases:
    """Claims (of queued items, or for a waiting caller), and the ends of a claim: complete, release, delete."""

    def __init__(self, dynamo: DynamoTable, items: ItemAccess) -> None:
        self._dynamo = dynamo
        self._table = dynamo.resource  # the boto3 Table its calls go to
        # Reads the item a release gives back, and fails a queued item that is malformed.
        self._items = items

    def claim_queued(self, item_id: str, owner: str, lease_s: float) -> StoredItem | None:
        """Take a PENDING item, or a RUNNING one whose lease expired; None if it is held or finished.

        An item no version of this service wrote (wrong-typed attributes) is marked FAILED with its problems
        and None returned: it fails alone, as in a listing, not the worker's whole batch.
        """
        try:
            response = self._take_queued(item_id, owner, lease_s)
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == "ValidationException":
                self._fail_if_malformed(item_id, exc)  # e.g. ADD on an ``attempts`` that is not a number
                return None
            raise
        if response is None:
            return None
        try:
            return self._dynamo.typed(response["Attributes"])
        except StoreError as malformed:
            self._items.fail_malformed(item_id, Status.RUNNING, malformed)
            return None

    def _fail_if_malformed(self, item_id: str, refused: StoreError) -> None:
        """After the table refused a claim as invalid: the item's problems make it FAILED, else the error stands."""
        raw = self._dynamo.call(
            f"read {item_id}", lambda: self._table.get_item(Key={KEY: item_id}, ConsistentRead=True)
        ).get("Item")
        if raw is None:
            raise refused
        seen = raw.get(STATUS)
        try:
            self._dynamo.typed(raw)
        except StoreError as malformed:
            if seen in (Status.PENDING, Status.RUNNING):
                self._items.fail_malformed(item_id, Status(seen), malformed)
                return
        raise refused

    def _take_queued(self, item_id: str, owner: str, lease_s: float) -> Any:
        """The conditional write of ``claim_queued``: the item RUNNING under ``owner``, one more attempt counted."""
        now = attributes.utc_now()
        return self._dynamo.call(
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

    def claim_or_create(self, item_id: str, owner: str, lease_s: float, fields: dict[str, Any]) -> bool | None:
        """Take a request to generate it now, for a caller waiting on it: the table is the single-flight lock.

        Creates the item RUNNING under ``owner``'s lease, or takes it when it is PENDING, FAILED, or
        RUNNING with an expired lease. Returns True when this call created the item, False when it took
        an existing one, and None when another holder's lease runs or the item is DONE.
        """
        now = attributes.utc_now()
        names, values, assignments = self._dynamo.upsert(now, fields, keep_existing=False)
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
        response = self._dynamo.call(
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

    def delete_unfinished(self, item_id: str, owner: str) -> bool:
        """Delete an item this owner created and still holds, when its generation failed (nothing half-written)."""
        deleted = self._dynamo.call(
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
            ":now": attributes.utc_now().isoformat(),
        }
        values.update({f":f{i}": value for i, value in enumerate(fields.values())})
        assignments = ", ".join(f"#f{i} = :f{i}" for i in range(len(fields)))
        response = self._dynamo.call(
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
        return self._dynamo.typed(response["Attributes"]) if response is not None else None

    def release(self, item_id: str, owner: str, error: str | None, max_attempts: int) -> Status | None:
        """Give a claimed item back: PENDING again, or FAILED with its error after ``max_attempts``.

        Returns the new status, or None when ``owner`` no longer held the lease.
        """
        item = self._items.get(item_id)
        if item is None or item.status != Status.RUNNING or item.lease_owner != owner:
            return None
        attempts = item.attempts or 0
        status = Status.FAILED if error is not None and attempts >= max_attempts else Status.PENDING
        values: dict[str, Any] = {":status": status, ":running": Status.RUNNING, ":owner": owner}
        values[":now"] = attributes.utc_now().isoformat()
        update = "SET #status = :status, updated_at = :now"
        if error is not None:
            update += ", #error = :error"
            values[":error"] = error[:2000]
        response = self._dynamo.call(
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
