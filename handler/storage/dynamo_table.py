"""One DynamoDB table as the store's parts share it: its calls (errors, retries), items typed as read, new items
and upserts with their times and expiry.

boto3 lives in handler/storage/ only. The endpoint comes from the SDK's own configuration
(``AWS_ENDPOINT_URL_DYNAMODB`` for a local table), so the same code runs against AWS, DynamoDB Local and moto.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from handler.core.errors import StoreError, describe_problems, field_problems
from handler.domain.answers import Status
from handler.domain.stored_item import StoredItem
from handler.storage import attributes
from handler.storage.attributes import CREATED_AT, EXPIRES_AT, KEY, STATUS, from_dynamo, to_dynamo

#: How many calls a batch read or write makes before it reports the keys or items DynamoDB left unprocessed.
BATCH_ATTEMPTS = 6
_THROTTLING = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}


def reason(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, as AWS recommends for unprocessed batch items."""
    return float(random.uniform(0, min(2.0, 0.05 * 2**attempt)))


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DynamoTable:
    """One table's boto3 resource, its calls (errors as StoreError) and the typed reading of its items."""

    def __init__(self, name: str, resource: Any | None = None, ttl_days: int | None = None) -> None:
        if resource is None:
            # Standard retries with a bounded count: throttling is retried, then reported clearly.
            dynamodb = boto3.resource("dynamodb", config=Config(retries={"max_attempts": 5, "mode": "standard"}))
            resource = dynamodb.Table(name)
        self.name = name
        #: The boto3 Table resource (``resource.meta.client`` for the batch calls).
        self.resource = resource
        self._ttl_days = ttl_days

    def call(self, what: str, operation: Callable[[], Any], conditional: bool = False) -> Any:
        """Run one table operation; errors become StoreError, a failed condition (when expected) None."""
        try:
            return operation()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if conditional and code == "ConditionalCheckFailedException":
                return None
            raise StoreError(
                f"cannot {what} in table {self.name}: {reason(exc)}", throttled=code in _THROTTLING
            ) from exc
        except BotoCoreError as exc:
            raise StoreError(f"cannot {what} in table {self.name}: {exc}") from exc

    def typed(self, raw: dict[str, Any]) -> StoredItem:
        """An item as read, typed; one that is not an item of this service is a store fault naming it."""
        try:
            return StoredItem.model_validate(from_dynamo(raw))
        except ValidationError as exc:
            # The item's values may be a caller's text: the answer names them, the log line does not.
            problems = field_problems(exc.errors(include_url=False))
            malformed = f"item {raw.get(KEY)!r} in table {self.name} is malformed"
            raise StoreError(
                f"{malformed}: {describe_problems(problems)}",
                log_message=f"{malformed}: {describe_problems(problems, with_values=False)}",
            ) from exc

    def new_item(self, item_id: str, status: Status, fields: dict[str, Any]) -> dict[str, Any]:
        """A whole item as PutItem writes it: the fields, its times and its expiry (TTL)."""
        now = attributes.utc_now()
        item = {KEY: item_id, STATUS: status, CREATED_AT: now.isoformat(), "updated_at": now.isoformat(), **fields}
        if self._ttl_days:
            item[EXPIRES_AT] = int((now + timedelta(days=self._ttl_days)).timestamp())
        return dict(to_dynamo(item))

    def upsert(
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
