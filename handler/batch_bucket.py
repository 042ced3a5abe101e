"""Batch files in S3, as a deployed feature: put a file under ``input/``, find its results under ``output/``.

- A JSONL file put under ``input/`` (native, OpenAI Batch or Bedrock lines: handler/batch_files.py) reaches
  the batch-files function as an S3 event. Its valid lines are queued as ``scripts/enqueue.py`` queues
  them, and the batch's manifest (the file's key and ETag, its format, each line's request id) is written
  under ``manifests/open/``.
- Each scheduled run, after its work, reads the open manifests. A batch's progress goes to
  ``output/<name>.progress.json`` (its items read by id with BatchGetItem, never a table scan); when every
  line has finished, its output and error files are written beside it, ``output/<name>.output.jsonl``
  and ``output/<name>.errors.jsonl``, in the file's format, and its manifest moves to ``manifests/done/``.

Outputs are written under ``output/``, never ``input/``, so they cannot trigger the function again.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from handler.batch_files import BatchFormat, Exported, export, jsonl_values, read_lines
from handler.errors import StoreError
from handler.items import Status
from handler.observability import logger
from handler.queued import enqueue
from handler.service import TextService, parse_request

INPUT_PREFIX = "input/"
OUTPUT_PREFIX = "output/"
OPEN_PREFIX = "manifests/open/"
DONE_PREFIX = "manifests/done/"
INPUT_SUFFIX = ".jsonl"


@dataclass(frozen=True)
class OutputKeys:
    """Where a batch file's results go: beside its name, under output/."""

    output: str
    errors: str
    progress: str

    @classmethod
    def of(cls, input_key: str) -> OutputKeys:
        name = OUTPUT_PREFIX + input_key.removeprefix(INPUT_PREFIX).removesuffix(INPUT_SUFFIX)
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
        response = self._call(f"read {key}", self._s3.get_object, Key=key, **kwargs)
        return bytes(response["Body"].read())

    def write(self, key: str, body: bytes, content_type: str) -> None:
        self._call(f"write {key}", self._s3.put_object, Key=key, Body=body, ContentType=content_type)

    def write_json(self, key: str, value: Any) -> None:
        self.write(key, json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8"), "application/json")

    def write_jsonl(self, key: str, records: list[dict[str, Any]]) -> None:
        body = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        self.write(key, body.encode("utf-8"), "application/x-ndjson")

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


def receive(service: TextService, bucket: BatchBucket, key: str, etag: str) -> dict[str, Any]:
    """Queue the valid lines of the batch file at ``key`` and open its batch; a summary of what came of it."""
    served = service.served_model()
    fmt, lines = read_lines(jsonl_values(io.BytesIO(bucket.read(key, etag))), served)
    report = enqueue(service, [(line.number, line.request) for line in lines if line.request is not None])
    refused = {number for number, _ in report.invalid}
    request_ids = {
        str(line.number): service.request_id(parse_request(line.request))
        for line in lines
        if line.request is not None and line.number not in refused
    }
    batch = hashlib.sha256(f"{bucket.name}/{key}#{etag}".encode()).hexdigest()[:32]
    outputs = OutputKeys.of(key)
    manifest = {
        "batch": batch,
        "input": key,
        "etag": etag,
        "format": fmt,
        "lines": len(lines),
        "request_ids": request_ids,
        "outputs": vars(outputs),
        "opened_at": datetime.now(UTC).isoformat(),
    }
    progress = {
        "batch": batch,
        "input": key,
        "format": fmt,
        "lines": len(lines),
        "invalid": sum(1 for line in lines if line.request is None) + len(refused),
        "queued": report.new,
        "already_done": report.already_done,
        "finished": False,
    }
    bucket.write_json(outputs.progress, progress)
    bucket.write_json(f"{OPEN_PREFIX}{batch}.json", manifest)
    logger.info("batch file queued", batch=batch, format=fmt, lines=len(lines), queued=report.new)
    return progress


def check_open(service: TextService, bucket: BatchBucket) -> list[dict[str, Any]]:
    """Update every open batch's progress; write the results of those whose lines have all finished."""
    assert service.store is not None
    checked = []
    for manifest_key, manifest in bucket.open_manifests():
        ids = sorted(set(manifest["request_ids"].values()))
        statuses = Counter(service.store.statuses(ids).values())
        unfinished = statuses[Status.PENDING] + statuses[Status.RUNNING]
        outputs = OutputKeys(**manifest["outputs"])
        progress: dict[str, Any] = {
            "batch": manifest["batch"],
            "input": manifest["input"],
            "format": manifest["format"],
            "lines": manifest["lines"],
            "requests": len(ids),
            "done": statuses[Status.DONE],
            "failed": statuses[Status.FAILED],
            "unfinished": unfinished,
            "finished": unfinished == 0,
        }
        if unfinished == 0:
            fmt, exported = _results(service, bucket, manifest)
            bucket.write_jsonl(outputs.output, exported.output)
            bucket.write_jsonl(outputs.errors, exported.errors)
            progress.update(exported.counts(), format=fmt)
        bucket.write_json(outputs.progress, progress)
        if unfinished == 0:
            bucket.close(manifest_key, manifest)
            logger.info("batch file finished", batch=manifest["batch"], counts=_counts(progress))
        checked.append(progress)
    return checked


def _results(service: TextService, bucket: BatchBucket, manifest: dict[str, Any]) -> tuple[BatchFormat, Exported]:
    # The input's own version (its ETag): the lines are read again, the results joined on the caller's ids.
    data = bucket.read(manifest["input"], manifest["etag"])
    return export(service, service.served_model(), jsonl_values(io.BytesIO(data)))


def _counts(progress: dict[str, Any]) -> dict[str, int]:
    return {key: value for key, value in progress.items() if isinstance(value, int) and not isinstance(value, bool)}
