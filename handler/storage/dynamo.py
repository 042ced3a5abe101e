"""DynamoDB access shared by the results table's writers: attribute names, number conversion, calls and errors.

boto3 lives in handler/storage/ only. The endpoint comes from the SDK's own configuration
(``AWS_ENDPOINT_URL_DYNAMODB`` for a local table), so the same code runs against AWS, DynamoDB Local and moto.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from handler.core.errors import StoreError, describe_problems, field_problems
from handler.formats.schemas import DYNAMODB_SMALLEST_MAGNITUDE, MAX_ITEM_BYTES
from handler.storage.items import Status, StoredItem

# Item attribute and index names; template.yaml defines the same table (a test keeps them equal).
KEY = "id"
STATUS = "status"
CREATED_AT = "created_at"
EXPIRES_AT = "expires_at"
STATUS_INDEX = "status-created_at-index"
#: The lease owner of a document whose chunks the workers are generating: no invocation holds it.
WAITING_FOR_CHUNKS = "waiting-for-chunks"

BATCH_ATTEMPTS = 6
_SMALLEST_NUMBER = Decimal(str(DYNAMODB_SMALLEST_MAGNITUDE))
_THROTTLING = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}


def utc_now() -> datetime:
    """The one clock of the table's writes (leases, times); modules call it as ``dynamo.utc_now()``."""
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


def reason(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, as AWS recommends for unprocessed batch items."""
    return float(random.uniform(0, min(2.0, 0.05 * 2**attempt)))


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TableAccess:
    """One table's client, its calls (errors as StoreError) and the typed reading of its items."""

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
                f"cannot {what} in table {self.table_name}: {reason(exc)}", throttled=code in _THROTTLING
            ) from exc
        except BotoCoreError as exc:
            raise StoreError(f"cannot {what} in table {self.table_name}: {exc}") from exc

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
