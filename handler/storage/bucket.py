"""The batch bucket (S3): batch files read under ``input/``, results written under ``output/``, manifests kept.

The endpoint comes from the SDK's configuration (``AWS_ENDPOINT_URL_S3`` for a local stand-in), so the same
code runs against AWS and moto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from handler.core.errors import StoreError
from handler.formats.jsonl import JSONL_MEDIA_TYPE, jsonl_bytes

INPUT_PREFIX = "input/"
OUTPUT_PREFIX = "output/"
OPEN_PREFIX = "manifests/open/"
DONE_PREFIX = "manifests/done/"
INPUT_SUFFIX = ".jsonl"
#: S3's answers for an object that is not there as it was: removed, or replaced (its ETag no longer matches).
_GONE = frozenset({"NoSuchKey", "404", "PreconditionFailed", "412"})


class InputGone(StoreError):
    """A batch's input cannot be read as it was: it was deleted, or replaced by a new upload (another ETag)."""


@dataclass(frozen=True)
class OutputKeys:
    """Where a batch file's results go: beside its name, under output/."""

    output: str
    errors: str
    progress: str

    @classmethod
    def of(cls, input_key: str, batch: str | None = None) -> OutputKeys:
        """Beside the input's name; with ``batch``, names of that batch alone (a failed batch's files, which a
        new upload under the same key must not overwrite, nor be overwritten by)."""
        name = OUTPUT_PREFIX + input_key.removeprefix(INPUT_PREFIX).removesuffix(INPUT_SUFFIX)
        if batch is not None:
            name = f"{name}.batch-{batch}"
        return cls(f"{name}.output.jsonl", f"{name}.errors.jsonl", f"{name}.progress.json")


class BatchBucket:
    """The batch bucket's objects: inputs read, outputs and manifests written (boto3 lives here)."""

    def __init__(self, name: str, client: Any | None = None) -> None:
        self.name = name
        # The endpoint comes from the SDK's configuration (AWS_ENDPOINT_URL_S3 for a local stand-in).
        self._s3 = client or boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}))

    def _call(self, what: str, operation: Any, **kwargs: Any) -> Any:
        try:
            return operation(Bucket=self.name, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot {what} in bucket {self.name}: {exc}") from exc

    def read(self, key: str, etag: str | None = None) -> bytes:
        """An object's bytes; with ``etag``, only that version of it (a later upload is another batch)."""
        kwargs = {"IfMatch": etag} if etag else {}
        try:
            response = self._s3.get_object(Bucket=self.name, Key=key, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in _GONE:
                raise InputGone(
                    f"{key} in bucket {self.name} was removed or replaced (S3 answered {code})",
                    log_message=f"a batch input in bucket {self.name} was removed or replaced (S3 answered {code})",
                ) from exc
            raise StoreError(f"cannot read {key} in bucket {self.name}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"cannot read {key} in bucket {self.name}: {exc}") from exc
        return bytes(response["Body"].read())

    def read_if_present(self, key: str) -> bytes | None:
        """An object's bytes, or None when there is no object at ``key``."""
        try:
            return self.read(key)
        except InputGone:
            return None

    def delete(self, key: str) -> None:
        """Remove an object (S3 answers the same whether or not it was there)."""
        self._call(f"remove {key}", self._s3.delete_object, Key=key)

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, in S3's order (ascending)."""
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call(f"list {prefix}", self._s3.list_objects_v2, Prefix=prefix, **token)
            found.extend(str(entry["Key"]) for entry in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def write(self, key: str, body: bytes, content_type: str) -> None:
        self._call(f"write {key}", self._s3.put_object, Key=key, Body=body, ContentType=content_type)

    def write_json(self, key: str, value: Any) -> None:
        self.write(key, json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8"), "application/json")

    def write_jsonl(self, key: str, records: list[dict[str, Any]]) -> None:
        self.write(key, jsonl_bytes(records), JSONL_MEDIA_TYPE)

    def open_manifests(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Each open batch's manifest (key, content), listed by prefix."""
        token: dict[str, str] = {}
        while True:
            page = self._call("list open batches", self._s3.list_objects_v2, Prefix=OPEN_PREFIX, **token)
            for entry in page.get("Contents", []):
                key = str(entry["Key"])
                yield key, json.loads(self.read(key))
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def close(self, manifest_key: str, manifest: dict[str, Any]) -> None:
        """Move a finished batch's manifest to manifests/done/."""
        self.write_json(DONE_PREFIX + manifest_key.removeprefix(OPEN_PREFIX), manifest)
        self._call(f"remove {manifest_key}", self._s3.delete_object, Key=manifest_key)
