"""The DynamoDB results table: one item per request id, written only by conditional writes.

boto3 lives here and nowhere else. The endpoint comes from the SDK's own configuration
(``AWS_ENDPOINT_URL_DYNAMODB`` for a local table), so the same code runs against AWS,
DynamoDB Local and moto.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from handler.errors import StoreError

# Item attribute and index names; template.yaml defines the same table (a test keeps them equal).
KEY = "id"
STATUS = "status"
CREATED_AT = "created_at"
EXPIRES_AT = "expires_at"
STATUS_INDEX = "status-created_at-index"

PENDING, RUNNING, DONE, FAILED = "PENDING", "RUNNING", "DONE", "FAILED"


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_dynamo(value: Any) -> Any:
    """Plain JSON data as DynamoDB wants it (floats as Decimal)."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def from_dynamo(value: Any) -> Any:
    """DynamoDB data back to plain JSON types (Decimal to int or float)."""
    if isinstance(value, dict):
        return {key: from_dynamo(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_dynamo(item) for item in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


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

    def get(self, item_id: str) -> dict[str, Any] | None:
        """The item with this id, read consistently, or None."""
        try:
            response = self._table.get_item(Key={KEY: item_id}, ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot read result {item_id} from table {self.table_name}: {_reason(exc)}") from exc
        item = response.get("Item")
        return from_dynamo(item) if item is not None else None

    def put_done(self, item_id: str, fields: dict[str, Any]) -> bool:
        """Write a finished result unless the table already holds a finished one for this id.

        Returns False when another writer's DONE item is already there (it is kept, not overwritten).
        """
        now = utc_now()
        item = {KEY: item_id, STATUS: DONE, CREATED_AT: now.isoformat(), "updated_at": now.isoformat(), **fields}
        if self._ttl_days:
            item[EXPIRES_AT] = int((now + timedelta(days=self._ttl_days)).timestamp())
        try:
            self._table.put_item(
                Item=to_dynamo(item),
                ConditionExpression="attribute_not_exists(#id) OR #status <> :done",
                ExpressionAttributeNames={"#id": KEY, "#status": STATUS},
                ExpressionAttributeValues={":done": DONE},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise StoreError(f"cannot write result {item_id} to table {self.table_name}: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"cannot write result {item_id} to table {self.table_name}: {_reason(exc)}") from exc
        return True


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)
