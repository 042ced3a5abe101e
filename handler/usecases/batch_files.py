"""Batch files in S3, as a deployed feature: put a file under ``input/``, find its results under ``output/``.

- A JSONL file put under ``input/`` (native, OpenAI Batch or Bedrock lines: handler/formats/batch_lines.py) reaches
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
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from handler.core.observability import logger
from handler.formats.batch_lines import BatchFormat, read_lines
from handler.formats.jsonl import jsonl_values
from handler.formats.schemas import parse_request
from handler.storage.bucket import OPEN_PREFIX, BatchBucket, OutputKeys
from handler.storage.items import Status
from handler.usecases.answer import TextService
from handler.usecases.batch_export import Exported, export
from handler.usecases.queued import enqueue


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
