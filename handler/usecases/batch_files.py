"""Batch files in S3, as a deployed feature: put a file under ``input/``, find its results under ``output/``.

- A JSONL file put under ``input/`` (native, OpenAI Batch or Bedrock lines: handler/formats/batch_lines.py) reaches
  the batch-files function as an S3 event. Its valid lines are queued as the batch scripts queue theirs
  (``queue_requests``, handler/usecases/queued_work.py), and the batch's manifest (the file's key and ETag, its
  format, each line's request id) is written under ``manifests/open/``.
- Each scheduled run, after its work, reads the open manifests. A batch's progress goes to
  ``output/<name>.progress.json`` (its items read by id with BatchGetItem, never a table scan); when every
  line has finished, its output and error files are written beside it, ``output/<name>.output.jsonl``
  and ``output/<name>.errors.jsonl``, in the file's format, and its manifest moves to ``manifests/done/``.
- A batch made through OpenAI's Batches API (POST /v1/batches) is an open manifest too; each run advances it
  (handler/usecases/openai_batch_runs.py).

Outputs are written under ``output/``, never ``input/``, so they cannot trigger the function again.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from handler.core.errors import StoreError
from handler.core.observability import logger
from handler.domain.answers import Status
from handler.domain.requests import parse_request
from handler.formats.batch_lines import BatchFormat, read_lines
from handler.formats.jsonl import jsonl_values
from handler.storage.bucket import OPEN_PREFIX, BatchBucket, InputGone, OutputKeys
from handler.usecases import openai_batch_runs
from handler.usecases.batch_export import Exported, export
from handler.usecases.queueing import queue_requests
from handler.usecases.text_service import TextService


def receive(service: TextService, bucket: BatchBucket, key: str, etag: str) -> dict[str, Any]:
    """Queue the valid lines of the batch file at ``key`` and open its batch; a summary of what came of it."""
    served = service.served_model()
    fmt, lines = read_lines(jsonl_values(io.BytesIO(bucket.read(key, etag))), served)
    report = queue_requests(service, [(line.number, line.request) for line in lines if line.request is not None])
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
    """Update every open batch's progress; write the results of those whose lines have all finished.

    One batch never holds up the others: one whose input was removed or replaced before it finished is
    closed as failed (its requests in its own error file), and one that cannot be checked now (S3 or the
    table unreachable) is left open for the next run.
    """
    checked = []
    for manifest_key, manifest in bucket.open_manifests():
        try:
            if "api" in manifest:  # a batch made through POST /v1/batches
                checked.append(openai_batch_runs.advance(service, bucket, manifest_key, manifest))
                continue
            checked.append(_check(service, bucket, manifest_key, manifest))
        except InputGone as gone:
            checked.append(_close_failed(bucket, manifest_key, manifest, gone))
        except StoreError as exc:
            logger.warning(
                "batch file not checked; the next run tries again", batch=manifest["batch"], error=exc.log_message
            )
            checked.append({"batch": manifest["batch"], "input": manifest["input"], "checked": False})
    return checked


def _check(service: TextService, bucket: BatchBucket, manifest_key: str, manifest: dict[str, Any]) -> dict[str, Any]:
    table = service.stored_requests.table
    assert table is not None
    ids = sorted(set(manifest["request_ids"].values()))
    statuses = Counter(table.items.statuses(ids).values())
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
    return progress


def _close_failed(bucket: BatchBucket, manifest_key: str, manifest: dict[str, Any], gone: InputGone) -> dict[str, Any]:
    """Close a batch whose input is gone: its lines cannot be read again to join their results to the caller's
    ids, so each of its requests is an error record (line, request id), in files of this batch's own."""
    reason = (
        "the batch's input file was removed or replaced before the batch finished, so its lines cannot be "
        "joined to their results; a file uploaded again under the same key is a batch of its own"
    )
    outputs = OutputKeys.of(manifest["input"], manifest["batch"])
    lines = sorted(manifest["request_ids"].items(), key=lambda entry: int(entry[0]))
    errors = [
        {"line": int(number), "id": request_id, "error": {"type": "BatchInputGone", "message": reason}}
        for number, request_id in lines
    ]
    bucket.write_jsonl(outputs.errors, errors)
    progress = {
        "batch": manifest["batch"],
        "input": manifest["input"],
        "format": manifest["format"],
        "lines": manifest["lines"],
        "requests": len(errors),
        "finished": True,
        "failed_batch": reason,
        "errors_file": outputs.errors,
    }
    bucket.write_json(outputs.progress, progress)
    bucket.close(manifest_key, {**manifest, "failed": reason, "outputs": vars(outputs)})
    logger.warning("batch file closed as failed: its input is gone", batch=manifest["batch"], error=gone.log_message)
    return progress


def _results(service: TextService, bucket: BatchBucket, manifest: dict[str, Any]) -> tuple[BatchFormat, Exported]:
    # The input's own version (its ETag): the lines are read again, the results joined on the caller's ids.
    data = bucket.read(manifest["input"], manifest["etag"])
    return export(service.stored_requests, service.served_model(), jsonl_values(io.BytesIO(data)))


def _counts(progress: dict[str, Any]) -> dict[str, int]:
    return {key: value for key, value in progress.items() if isinstance(value, int) and not isinstance(value, bool)}
