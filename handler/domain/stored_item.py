"""The results table's item: one typed model, the only place that builds item fields and reads items.

An item's life: PENDING (queued) -> RUNNING (claimed: lease owner and expiry) -> DONE, or back to
PENDING when its work failed or was given back, or FAILED after too many attempts (handler/storage/ makes
every change with a conditional write; handler/domain/item_limits.py says what one item can hold).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from handler.domain.answers import Answer, DocumentInfo, DocumentProgress, Metrics, ModelInfo, Status
from handler.domain.requests import TextRequest


class StoredItem(BaseModel):
    """One item as read from the table. Attributes written by other versions are kept, not dropped."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    status: Status
    task: str | None = None
    #: The request as its caller sent it (validated again before it is generated).
    request: Any = None
    output: str | None = None
    finish_reason: str | None = None
    metrics: Metrics | None = None
    model: ModelInfo | None = None
    prompt_version: str | None = None
    attempts: int | None = None
    error: str | None = None
    lease_owner: str | None = None
    lease_until: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    expires_at: int | None = None
    document: DocumentInfo | None = None
    progress: DocumentProgress | None = None
    #: A document fanned out to the workers: the chunk requests not yet ended, and how many chunk
    #: requests each level handed over (handler/usecases/documents.py).
    chunks_left: set[str] | None = None
    fanned_out: dict[str, int] | None = None
    #: A chunk's request: the documents waiting on it, told when it ends.
    documents_waiting: set[str] | None = None

    def to_answer(self, cached: bool) -> Answer:
        """The answer this item gives; ``cached`` only when it holds a finished result."""
        return Answer.model_validate(
            {
                "id": self.id,
                "task": self.task,
                "status": self.status,
                "output": self.output,
                "finish_reason": self.finish_reason,
                "cached": cached and self.status == Status.DONE,
                "stored": True,
                "metrics": self.metrics,
                "model": self.model,
                "last_error": self.error,
                "attempts": self.attempts,
                "document": self.document,
                "progress": self.progress if self.status == Status.RUNNING else None,
            }
        )

    def as_json(self) -> dict[str, Any]:
        """Plain JSON data of every attribute the item has (exports)."""
        return self.model_dump(mode="json", exclude_none=True)


def pending_fields(request: TextRequest) -> dict[str, Any]:
    """The fields of a queued request's item (the store adds id, status, attempts and times)."""
    return {"task": request.task, "request": request.model_dump(mode="json", by_alias=True)}


def done_fields(
    request: TextRequest,
    output: str,
    finish_reason: str,
    metrics: Metrics,
    model: ModelInfo,
    document: DocumentInfo | None = None,
    *,
    prompt_version: str,
) -> dict[str, Any]:
    """The fields of a finished request's item; ``prompt_version`` is the wording's version its prompt was
    built with (handler/formats/prompts.py), stored beside the output it made."""
    fields = {
        **pending_fields(request),
        "output": output,
        "finish_reason": finish_reason,
        "metrics": metrics.model_dump(mode="json"),
        "model": model.model_dump(mode="json"),
        "prompt_version": prompt_version,
    }
    if document is not None:
        fields["document"] = document.model_dump(mode="json")
    return fields
