"""AWS on this machine for the tests: the credentials moto accepts, a results table and a batch bucket in moto
server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer

from scripts.local.moto_server import dynamodb_client, s3_client

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


@contextlib.contextmanager
def local_batch_bucket(monkeypatch: pytest.MonkeyPatch, endpoint_url: str, name: str) -> Iterator[Any]:
    """A batch bucket on the moto server for one test, named to the function (BATCH_BUCKET, AWS_ENDPOINT_URL_S3):
    its S3 client; emptied and removed afterwards."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint_url)
    monkeypatch.setenv("BATCH_BUCKET", name)
    client = s3_client(endpoint_url)
    client.create_bucket(Bucket=name)
    try:
        yield client
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for entry in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=entry["Key"])
        client.delete_bucket(Bucket=name)
