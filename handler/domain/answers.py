"""What the service answers: a request's answer and status, its metrics and model, documents' progress, errors."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    """Which model produced a result."""

    file: str
    sha256: str
    quantization: str | None = None
    context_length: int | None = None


class Metrics(BaseModel):
    """Timings of one generation, named after llama.cpp's own timings."""

    prompt_tokens: int = Field(description="Tokens in the prompt.")
    prompt_eval_tokens: int = Field(description="Prompt tokens evaluated (the rest came from the reused KV cache).")
    prompt_ms: float
    prompt_tokens_per_s: float
    completion_tokens: int
    eval_ms: float
    eval_tokens_per_s: float
    eval_steps: int = Field(
        0, description="llama_decode steps after the prompt: one per token, or one per drafted run checked at once."
    )
    drafted_tokens: int = Field(0, description="Tokens guessed by prompt lookup and checked by the model.")
    draft_accepted_tokens: int = Field(0, description="Drafted tokens the model agreed with (kept in the output).")
    total_ms: float
    load_ms: float | None = Field(None, description="Model load time; only on the request that loaded the model.")
    cold_start: bool = Field(description="First request of this execution environment.")
    n_threads: int
    peak_rss_mb: float


class Status(StrEnum):
    """Where a request is in its life: queued, being generated, finished, or failed for good."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"


class DocumentStep(BaseModel):
    """One level of a chunked text: its requests (each stored as its own item) and their summed counts."""

    level: int = Field(description="1: the chunks of the text; 2 and up: summaries of the level below.")
    requests: int
    generated: int = Field(
        description="Requests generated for this document, here or (fanned out) by the workers; the others were "
        "in the table already."
    )
    prompt_tokens: int
    completion_tokens: int
    total_ms: float


class DocumentProgress(BaseModel):
    """How far a document being answered has come (RUNNING items): its current level's requests done, counted
    as each ends, also when the workers generate them."""

    level: int
    done: int
    total: int


class DocumentInfo(BaseModel):
    """How a text longer than the context window was answered."""

    chunks: int = Field(description="Chunks the text was cut into.")
    levels: int = Field(description="Levels of requests: 1 for a translation, 2 or more for a summary.")
    steps: list[DocumentStep]


class Answer(BaseModel):
    """A request's result: finished (DONE), queued or in progress, or FAILED with its error."""

    id: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the request, the model and the prompt version.")
    task: Literal["summarize", "translate", "chat"]
    status: Status
    output: str | None = None
    finish_reason: Literal["stop", "length"] | None = None
    cached: bool = Field(False, description="Answered from the results table without generating.")
    stored: bool = Field(False, description="The result is in the results table.")
    metrics: Metrics | None = None
    model: ModelInfo | None = None
    last_error: str | None = Field(None, description="Why the last attempt failed (FAILED requests, retried ones).")
    attempts: int | None = None
    document: DocumentInfo | None = Field(None, description="A text cut into chunks: how many, in how many levels.")
    progress: DocumentProgress | None = Field(
        None, description="While a document runs: its current level's chunk requests done, of how many."
    )


class ErrorInfo(BaseModel):
    """What went wrong: a type to branch on, a message for people, and facts such as limits."""

    type: str = Field(
        description="InvalidRequest, InputTooLong, OutputInvalid, MalformedJson, PayloadTooLarge, "
        "UnsupportedMediaType, NotFound, MethodNotAllowed, ConfigurationError, ModelLoadError, GenerationError, "
        "DeadlineReached, StoreError or InternalError; TooManyRequests or ServiceUnavailable from the local API's "
        "front (make serve) when its function is busy.",
        examples=["InvalidRequest"],
    )
    message: str = Field(description="Names every bad field, its problem and the value given, or what failed.")
    details: dict[str, Any] | None = Field(
        None, description="Machine-readable facts: the fields and their problems, token counts and limits, sizes."
    )


class ErrorAnswer(BaseModel):
    """The one error shape of every entry point: ``{"error": {"type", "message"[, "details"]}}``."""

    error: ErrorInfo
