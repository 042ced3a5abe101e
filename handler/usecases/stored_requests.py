"""Requests as the results table and the work queue hold them: their ids, lookups, leases, and their ends.

Every path that ends a request (DONE, or FAILED for good) ends it here, so the documents waiting on it are
always told: each counts the request once, and the one count that ends a document's last chunk queues that
document again, exactly once (handler/usecases/documents.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from handler.core.observability import logger
from handler.core.settings import Settings
from handler.domain.answers import Answer, Status
from handler.domain.requests import TextRequest
from handler.domain.stored_item import StoredItem
from handler.engine import model_identity
from handler.formats.prompts import PROMPT_VERSION
from handler.storage.result_store import ResultStore
from handler.storage.workqueue import WorkQueue
from handler.usecases.metrics import emit_failed

#: Lambda's longest invocation: the lease of a generation without a deadline.
MAX_INVOCATION_S = 900.0


def request_id(request: TextRequest, model_sha256: str) -> str:
    """Deterministic id of a request: task, inputs, output-changing options, model and prompt version."""
    identity = {"prompt_version": PROMPT_VERSION, "model_sha256": model_sha256, "request": request.identity()}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class StoredRequests:
    """One results table (optional: without it nothing is stored or queued) and an optional work queue."""

    def __init__(self, settings: Settings, table: ResultStore | None, queue: WorkQueue | None = None) -> None:
        self.settings = settings
        self.table = table
        self.queue = queue

    def request_id(self, request: TextRequest) -> str:
        """The request's id (hashes the model file once per process unless its hash is given)."""
        identity = model_identity(self.settings.model_path, self.settings.model_sha256)
        return request_id(request, identity.sha256)

    def lease_s(self, deadline: float | None) -> float:
        """How long a claim made now lasts: until the deadline (or Lambda's longest invocation), plus the margin."""
        remaining_s = deadline - time.monotonic() if deadline is not None else MAX_INVOCATION_S
        return max(remaining_s, 0.0) + self.settings.safety_margin_s

    def lookup(self, item_id: str) -> Answer | None:
        """The stored state of a request, or None; never loads the model."""
        if self.table is None:
            return None
        item = self.table.items.get(item_id)
        return item.to_answer(cached=True) if item is not None else None

    def complete(self, item_id: str, owner: str, fields: dict[str, Any]) -> StoredItem | None:
        """Write a held item's result (None when the lease was lost); documents waiting on it are told."""
        assert self.table is not None
        finished = self.table.leases.complete(item_id, owner, fields)
        self.tell_waiting_documents(finished)
        return finished

    def release(self, item_id: str, owner: str, error: str | None, max_attempts: int | None = None) -> Status | None:
        """Give a claimed item back (PENDING, or FAILED with its error after ``max_attempts``, by default the
        setting); documents waiting on an item that failed for good are told."""
        assert self.table is not None
        attempts = self.settings.max_attempts if max_attempts is None else max_attempts
        status = self.table.leases.release(item_id, owner, error, attempts)
        if status == Status.FAILED:
            item = self.table.items.get(item_id)
            if item is not None and item.task:
                emit_failed(item.task)
            self.tell_waiting_documents(item)
        return status

    def requeue(self, item_id: str, owner: str) -> None:
        """A held item that did not finish in time goes back to the queue, for a worker, without an error."""
        self.release(item_id, owner, None)
        if self.queue is not None:
            self.queue.send([item_id])

    def tell_waiting_documents(self, item: StoredItem | None) -> None:
        """After a request ended (DONE, or FAILED for good): each document waiting on it counts it, and the
        one count that ends a document's last chunk queues that document again."""
        if item is None or not item.documents_waiting or item.status not in (Status.DONE, Status.FAILED):
            return
        for document_id in sorted(item.documents_waiting):
            self.count_ended(document_id, item.id)

    def count_ended(self, document_id: str, chunk_id: str) -> None:
        """Count one ended chunk of a waiting document; the write that counts its last one queues it again."""
        table = self.table
        assert table is not None
        if table.documents.chunk_ended(document_id, chunk_id) and table.documents.queue_again(document_id):
            logger.info("document's chunks ended; document queued again", id=document_id)
            if self.queue is not None:
                self.queue.send([document_id])
