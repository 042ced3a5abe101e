"""OpenAI's Files and Batches objects, as the openai SDK reads them (``FileObject``, ``Batch``, their pages).

One source of truth for the shapes the routes answer (handler/entry/api_batches.py), the records stored in the
batch bucket (handler/storage/caller_files.py) and what the scheduled runs write (handler/usecases/openai_batches.py):
a stored record is the object itself, validated on the way in and out.

Ids are opaque to callers; inside, each carries its creation time inverted (``_id_of``), so that listing the
bucket's keys in their order lists the newest first, as OpenAI's lists are.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from handler.formats.openai_batch import OPENAI_URL

FILE_PREFIX = "file-"
BATCH_PREFIX = "batch_"
#: An id's hex digits: 11 of inverted milliseconds, 13 random.
ID_DIGITS = 24
FILE_ID_PATTERN = rf"^{FILE_PREFIX}[0-9a-f]{{{ID_DIGITS}}}$"
BATCH_ID_PATTERN = rf"^{BATCH_PREFIX}[0-9a-f]{{{ID_DIGITS}}}$"
#: Milliseconds since the epoch stay below this until the year 2109: ids sort newest first until then.
_TIME_CEILING_MS = 1 << 42

#: The one purpose this service accepts for an upload, and the one it gives the files it writes.
BATCH_PURPOSE = "batch"
OUTPUT_PURPOSE = "batch_output"
#: OpenAI's one completion window.
COMPLETION_WINDOW_S = 24 * 3600
#: OpenAI's limits on a batch's input file and on metadata.
MAX_BATCH_LINES = 50_000
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512

BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
#: Statuses after which nothing changes.
FINAL_STATUSES = frozenset({"failed", "completed", "expired", "cancelled"})
FilePurpose = Literal["batch", "batch_output"]


def _id_of(prefix: str) -> str:
    inverted_ms = _TIME_CEILING_MS - int(time.time() * 1000)
    return f"{prefix}{inverted_ms:011x}{secrets.token_hex(7)[:13]}"


def new_file_id() -> str:
    return _id_of(FILE_PREFIX)


def new_batch_id() -> str:
    return _id_of(BATCH_PREFIX)


class FileObject(BaseModel):
    """OpenAI's ``file`` object."""

    model_config = ConfigDict(extra="forbid")

    id: str
    object: Literal["file"] = "file"
    bytes: int = Field(ge=0)
    created_at: int
    filename: str
    purpose: FilePurpose
    #: Deprecated by OpenAI, still in its objects: a stored file is whole, so always ``processed``.
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class BatchCreate(BaseModel):
    """POST /v1/batches, as OpenAI takes it: one endpoint and one window are served here."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(
        min_length=1, max_length=64, description="A file uploaded with purpose `batch` (POST /v1/files)."
    )
    endpoint: Literal["/v1/chat/completions"] = Field(description=f"The one endpoint served here: {OPENAI_URL}.")
    completion_window: Literal["24h"] = Field(description="OpenAI's one window: unfinished lines expire after it.")
    # Values are checked by metadata_problems, not by type: a type error would name the key, the caller's text.
    metadata: dict[str, Any] | None = Field(
        None,
        max_length=MAX_METADATA_PAIRS,
        description=f"Up to {MAX_METADATA_PAIRS} pairs: keys of at most {MAX_METADATA_KEY} characters, values of "
        f"at most {MAX_METADATA_VALUE}.",
    )


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    """Tokens of the lines answered, as the table's metrics counted them (an answer from the table counts its
    original generation's tokens: nothing was read again, but the caller got them)."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class Batch(BaseModel):
    """OpenAI's ``batch`` object."""

    model_config = ConfigDict(extra="forbid")

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    model: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    usage: BatchUsage | None = None
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool


def page_of(objects: list[Any], has_more: bool) -> dict[str, Any]:
    """A list page's fields around its objects."""
    return {
        "object": "list",
        "data": objects,
        "first_id": objects[0].id if objects else None,
        "last_id": objects[-1].id if objects else None,
        "has_more": has_more,
    }


def metadata_problems(metadata: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What is wrong with a batch's metadata, naming the pair by its place, the limit and the size found (never a
    key or value: both are the caller's text)."""
    problems: list[dict[str, Any]] = []
    for number, (key, value) in enumerate((metadata or {}).items(), start=1):
        if not isinstance(value, str):
            problems.append({"field": "metadata", "problem": f"the value of key {number} is not a string"})
            continue
        if len(key) > MAX_METADATA_KEY:
            problem = f"key {number} has {len(key)} characters; the limit is {MAX_METADATA_KEY}"
            problems.append({"field": "metadata", "problem": problem})
        if len(value) > MAX_METADATA_VALUE:
            problem = f"the value of key {number} has {len(value)} characters; the limit is {MAX_METADATA_VALUE}"
            problems.append({"field": "metadata", "problem": problem})
    return problems
