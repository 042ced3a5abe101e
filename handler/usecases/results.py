"""The results table and the work queue as the use cases see them: ids, lookups, leases, and the ends of requests.

Every path that ends a request (DONE, or FAILED for good) ends it here, so the documents waiting on it are
always told: each counts the request once, and the one count that ends a document's last chunk queues that
document again, exactly once (handler/usecases/documents.py).
"""

from __future__ import annotations

import time
from typing import Any

from handler.core.observability import logger
from handler.core.settings import Settings
from handler.engine import model_identity
from handler.formats import openai_chat
from handler.formats.schemas import Answer, TextRequest
from handler.storage.items import Status, StoredItem
from handler.storage.table import ResultStore
from handler.storage.workqueue import WorkQueue
from handler.usecases.plan import request_id

#: Lambda's longest invocation: the lease of a generation without a deadline.
MAX_INVOCATION_S = 900.0


class Results:
    """One results table (optional: without it nothing is stored or queued) and an optional work queue."""

    def __init__(self, settings: Settings, store: ResultStore | None, queue: WorkQueue | None = None) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue

    def request_id(self, request: TextRequest) -> str:
        """The request's id (hashes the model file once per process unless its hash is given)."""
        identity = model_identity(self.settings.model_path, self.settings.model_sha256)
        return request_id(request, identity.sha256)

    def served_model(self) -> str:
        """The served model's id, as GET /v1/models gives it and OpenAI requests must name it."""
        return openai_chat.model_id(model_identity(self.settings.model_path, self.settings.model_sha256).file)

    def lease_s(self, deadline: float | None) -> float:
        """How long a claim made now lasts: until the deadline (or Lambda's longest invocation), plus the margin."""
        remaining_s = deadline - time.monotonic() if deadline is not None else MAX_INVOCATION_S
        return max(remaining_s, 0.0) + self.settings.safety_margin_s

    def lookup(self, item_id: str) -> Answer | None:
        """The stored state of a request, or None; never loads the model."""
        if self.store is None:
            return None
        item = self.store.get(item_id)
        return item.to_answer(cached=True) if item is not None else None

    def complete(self, item_id: str, owner: str, fields: dict[str, Any]) -> StoredItem | None:
        """Write a held item's result (None when the lease was lost); documents waiting on it are told."""
        assert self.store is not None
        finished = self.store.complete(item_id, owner, fields)
        self.tell_waiting_documents(finished)
        return finished

    def release(self, item_id: str, owner: str, error: str | None, max_attempts: int | None = None) -> Status | None:
        """Give a claimed item back (PENDING, or FAILED with its error after ``max_attempts``, by default the
        setting); documents waiting on an item that failed for good are told."""
        assert self.store is not None
        attempts = self.settings.max_attempts if max_attempts is None else max_attempts
        status = self.store.release(item_id, owner, error, attempts)
        if status == Status.FAILED:
            self.tell_waiting_documents(self.store.get(item_id))
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
        store = self.store
        assert store is not None
        if store.chunk_ended(document_id, chunk_id) and store.wake(document_id):
            logger.info("document's chunks ended; document queued again", id=document_id)
            if self.queue is not None:
                self.queue.send([document_id])
