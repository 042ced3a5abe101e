"""The results table's attribute and index names, and values as DynamoDB holds them: numbers, times, item sizes.

template.yaml defines the same table (a test keeps the names equal). Every part of the store
(handler/storage/result_store.py) writes through these, and the use cases check a result's size here before
writing it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from handler.domain.item_limits import DYNAMODB_SMALLEST_MAGNITUDE, MAX_ITEM_BYTES

# Item attribute and index names.
KEY = "id"
STATUS = "status"
CREATED_AT = "created_at"
EXPIRES_AT = "expires_at"
STATUS_INDEX = "status-created_at-index"

_SMALLEST_NUMBER = Decimal(str(DYNAMODB_SMALLEST_MAGNITUDE))


def utc_now() -> datetime:
    """The one clock of the table's writes (leases, times); modules call it as ``attributes.utc_now()``."""
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
