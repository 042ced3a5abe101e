"""AWS on this machine for the tests: the credentials moto accepts, and a results table in moto server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from scripts.local.moto_server import dynamodb_client

#: Credentials and region for moto: never real ones, and no request leaves this machine.
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@dataclass
class Table:
    """A results table in moto server: its name and endpoint, its items read back."""

    name: str
    endpoint_url: str

    def client(self) -> Any:
        return dynamodb_client(self.endpoint_url)

    def items(self) -> list[dict[str, Any]]:
        """Every item in the table, deserialized."""
        deserializer = TypeDeserializer()
        pages = self.client().get_paginator("scan").paginate(TableName=self.name, ConsistentRead=True)
        return [{k: deserializer.deserialize(v) for k, v in item.items()} for page in pages for item in page["Items"]]

    def delete(self, item_id: str) -> None:
        self.client().delete_item(TableName=self.name, Key={"id": {"S": item_id}})
