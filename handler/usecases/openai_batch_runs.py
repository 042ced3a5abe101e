"""The scheduled runs' part of OpenAI's Batches API: each run advances every open API batch (more lines queued,
``request_counts`` kept current, a cancel or the window's end honoured) and ends the batches whose lines all have
an answer, writing their output and error files (handler/usecases/openai_batches.py creates them).
"""

from __future__ import annotations

import hashlib
import io
import time
from collections import Counter
from typing import Any

from handler.core.observability import logger
from handler.domain.answers import Status
from handler.formats.batch_lines import read_lines
from handler.formats.batch_record import BatchLine
from handler.formats.jsonl import JSONL_MEDIA_TYPE, jsonl_bytes, jsonl_values
from handler.formats.openai_files import (
    BATCH_PREFIX,
    FILE_PREFIX,
    FINAL_STATUSES,
    OUTPUT_PURPOSE,
    Batch,
    BatchError,
    BatchErrors,
    BatchStatus,
    BatchUsage,
    FileObject,
    RequestCounts,
)
from handler.storage.bucket import BatchBucket
from handler.storage.caller_files import CallerFiles
from handler.usecases.batch_export import Unanswered, export
from handler.usecases.queueing import queue_requests
from handler.usecases.text_service import TextService

#: How long a cancelled batch waits for its lines already queued, as OpenAI waits for in-flight requests.
CANCEL_GRACE_S = 600
CANCELLED = Unanswered("batch_cancelled", "The batch was cancelled before this request was answered.")
EXPIRED = Unanswered("batch_expired", "This request could not be executed before the completion window expired.")
_UNFINISHED = (Status.PENDING, Status.RUNNING)


def _now() -> int:
    return int(time.time())


def top_up(service: TextService, manifest: dict[str, Any], lines: list[BatchLine], statuses: dict[str, str]) -> int:
    """Queue the batch's next lines not in the table yet, in line order, so that at most the window's worth are
    unfinished; how many requests were queued."""
    unfinished = sum(1 for status in statuses.values() if status in _UNFINISHED)
    room = service.settings.batch_window - unfinished
    request_ids = {int(number): item_id for number, item_id in manifest["request_ids"].items()}
    chosen: dict[str, tuple[int, Any]] = {}
    for line in lines:
        item_id = request_ids.get(line.number)
        if len(chosen) >= room:
            break
        if item_id is not None and item_id not in statuses and item_id not in chosen:
            chosen[item_id] = (line.number, line.request)
    if not chosen:
        return 0
    report = queue_requests(service, chosen.values())
    return report.new


def advance(service: TextService, bucket: BatchBucket, manifest_key: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """One scheduled run's step for an API batch: honour a cancel or the window's end, queue more lines, count,
    and end the batch (its output and error files written) once nothing more will be answered."""
    files = CallerFiles(bucket, manifest["api"]["owner"])
    batch_id = manifest["batch"]
    batch = files.batch(batch_id)
    if batch is None or batch.status in FINAL_STATUSES:
        bucket.close(manifest_key, manifest)
        return {"batch": batch_id, "status": batch.status if batch else "gone"}
    now = _now()
    cancel_at = files.cancel_requested_at(batch_id)
    if cancel_at is not None and batch.status != "cancelling":
        batch.status, batch.cancelling_at = "cancelling", cancel_at
    elif batch.status == "validating":  # its creation stopped after the manifest: the batch runs
        batch.status, batch.in_progress_at = "in_progress", now
    table = service.stored_requests.table
    assert table is not None
    ids = sorted(set(manifest["request_ids"].values()))
    statuses = table.items.statuses(ids)
    ending: BatchStatus | None = None
    if batch.status == "cancelling":
        still_running = any(status in _UNFINISHED for status in statuses.values())
        if not still_running or now - (batch.cancelling_at or now) >= CANCEL_GRACE_S:
            ending = "cancelled"
    elif batch.expires_at is not None and now >= batch.expires_at:
        ending = "expired"
    elif all(statuses.get(item_id) in (Status.DONE, Status.FAILED) for item_id in ids):
        ending = "completed"
    elif len(statuses) < len(ids):
        content = files.content(batch.input_file_id)
        if content is None:
            return _fail_input_gone(files, bucket, manifest_key, manifest, batch)
        _, lines = read_lines(jsonl_values(io.BytesIO(content)), service.served_model())
        if top_up(service, manifest, lines, statuses):
            statuses = table.items.statuses(ids)
    counts = Counter(statuses.get(manifest["request_ids"][number]) for number in manifest["request_ids"])
    batch.request_counts = RequestCounts(
        total=manifest["lines"], completed=counts[Status.DONE], failed=manifest["invalid"] + counts[Status.FAILED]
    )
    if ending is None:
        files.put_batch(batch)
        return {"batch": batch_id, "status": batch.status, **batch.request_counts.model_dump()}
    return _finish(service, files, bucket, manifest_key, manifest, batch, ending)


def _finish(
    service: TextService,
    files: CallerFiles,
    bucket: BatchBucket,
    manifest_key: str,
    manifest: dict[str, Any],
    batch: Batch,
    ending: BatchStatus,
) -> dict[str, Any]:
    """Write the batch's output and error files and end it. Written again whole if a run stops half-way: the
    files' ids are the batch's own, so a second finish replaces the first's files rather than adding to them."""
    batch.status, batch.finalizing_at = "finalizing", batch.finalizing_at or _now()
    files.put_batch(batch)
    content = files.content(batch.input_file_id)
    if content is None:
        return _fail_input_gone(files, bucket, manifest_key, manifest, batch)
    unanswered = {"cancelled": CANCELLED, "expired": EXPIRED}.get(ending)
    _, exported = export(service.stored_requests, service.served_model(), jsonl_values(io.BytesIO(content)), unanswered)
    batch.output_file_id = _write_result_file(files, batch, "output", exported.output)
    batch.error_file_id = _write_result_file(files, batch, "error", exported.errors)
    batch.request_counts = RequestCounts(
        total=manifest["lines"], completed=exported.done, failed=exported.failed + exported.invalid
    )
    batch.usage = _usage(exported.output)
    now = _now()
    batch.status = ending
    if ending == "completed":
        batch.completed_at = now
    elif ending == "cancelled":
        batch.cancelled_at = now
    else:
        batch.expired_at = now
    files.put_batch(batch)
    bucket.close(manifest_key, manifest)
    logger.info("batch ended", batch=batch.id, status=ending, **batch.request_counts.model_dump())
    return {"batch": batch.id, "status": ending, **batch.request_counts.model_dump()}


def _write_result_file(files: CallerFiles, batch: Batch, kind: str, records: list[dict[str, Any]]) -> str | None:
    if not records:
        return None
    digits = batch.id.removeprefix(BATCH_PREFIX)
    # The batch's time digits keep the file beside its batch in lists; the rest is the batch's own, so that a
    # finish done again writes the same file.
    file_id = FILE_PREFIX + digits[:11] + hashlib.sha256(f"{batch.id}:{kind}".encode()).hexdigest()[:13]
    content = jsonl_bytes(records)
    record = FileObject(
        id=file_id,
        bytes=len(content),
        created_at=_now(),
        filename=f"{batch.id}_{kind}.jsonl",
        purpose=OUTPUT_PURPOSE,
    )
    files.put_file(record, content, JSONL_MEDIA_TYPE)
    return file_id


def _usage(output: list[dict[str, Any]]) -> BatchUsage:
    prompt = completion = 0
    for record in output:
        usage = ((record.get("response") or {}).get("body") or {}).get("usage") or {}
        prompt += int(usage.get("prompt_tokens") or 0)
        completion += int(usage.get("completion_tokens") or 0)
    return BatchUsage(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)


def _fail_input_gone(
    files: CallerFiles, bucket: BatchBucket, manifest_key: str, manifest: dict[str, Any], batch: Batch
) -> dict[str, Any]:
    message = "the batch's input file was deleted before the batch ended: its lines cannot be answered"
    batch.status, batch.failed_at = "failed", _now()
    batch.errors = BatchErrors(data=[BatchError(code="input_file_deleted", message=message, param="input_file_id")])
    files.put_batch(batch)
    bucket.close(manifest_key, manifest)
    logger.warning("batch failed: its input file was deleted", batch=batch.id)
    return {"batch": batch.id, "status": "failed"}
