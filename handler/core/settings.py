"""Settings of one execution environment, read from the environment once and validated."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from handler.core.errors import ConfigurationError, describe_validation_error


def available_cpus() -> int:
    """CPUs this process may run on (what Lambda grants), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Settings(BaseModel):
    """Environment settings; each field names its variable in ``alias``."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    model_path: Path = Field(alias="MODEL_PATH", description="GGUF file to serve.")
    model_sha256: Sha256Hex | None = Field(
        None,
        alias="MODEL_SHA256",
        description="sha256 of the GGUF; else read from '<MODEL_PATH>.sha256', else computed once.",
    )
    table_name: str | None = Field(
        None, alias="TABLE_NAME", min_length=3, max_length=255, description="Results table; unset disables storing."
    )
    n_ctx: int = Field(4096, alias="N_CTX", ge=0, le=131072, description="Context length; 0 takes the model's own.")
    n_threads: int = Field(default_factory=available_cpus, alias="N_THREADS", ge=1, le=256)
    n_threads_batch: int | None = Field(
        None, alias="N_THREADS_BATCH", ge=1, le=256, description="Defaults to n_threads."
    )
    n_batch: int = Field(512, alias="N_BATCH", ge=1, le=8192)
    n_ubatch: int = Field(512, alias="N_UBATCH", ge=1, le=8192)
    use_mmap: bool = Field(
        False,
        alias="USE_MMAP",
        description="Map the model file instead of reading it; off: llama.cpp repacks the weights into memory of "
        "its own anyway, and the mapped pages would stay resident beside them (1.4 GB more for Phi-3-mini).",
    )
    kv_cache_type_k: Literal["q8_0", "f16"] = Field(
        "q8_0",
        alias="KV_CACHE_TYPE_K",
        description="Type of the attention K cache; q8_0 decodes faster on CPU, f16 is kept for models whose "
        "head size is not a multiple of 32.",
    )
    flash_attn: bool = Field(
        False, alias="FLASH_ATTN", description="llama.cpp's flash attention; off: it decodes slower on CPU here."
    )
    spec_draft_max: int = Field(
        3,
        alias="SPEC_DRAFT_MAX",
        ge=0,
        le=64,
        description="Most tokens drafted per decode step by prompt lookup (greedy requests); 0 turns drafting off. "
        "3: a step checks 4 tokens, one block of llama.cpp's repacked kernels.",
    )
    batch_parallel: int = Field(
        4, alias="BATCH_PARALLEL", ge=1, le=64, description="Queued requests decoded together by batch runs."
    )
    batch_n_ctx: int = Field(
        8192, alias="BATCH_N_CTX", ge=256, le=262144, description="KV cache tokens shared by batched requests."
    )
    preload_model: bool = Field(
        False, alias="PRELOAD_MODEL", description="Load the model during init instead of on the first generation."
    )
    batch_bucket: str | None = Field(
        None,
        alias="BATCH_BUCKET",
        min_length=3,
        max_length=63,
        description="S3 bucket of batch files: input/ is read and queued, output/ gets each batch's results.",
    )
    batch_window: int = Field(
        1000,
        alias="BATCH_WINDOW",
        ge=1,
        le=50_000,
        description="Lines of one API batch (POST /v1/batches) queued and not finished at a time; each scheduled "
        "run queues more. Cancelling a batch stops its queueing: at most this many of its lines run after a cancel.",
    )
    unauthenticated_owner: str | None = Field(
        None,
        alias="UNAUTHENTICATED_OWNER",
        max_length=256,
        description="Whose files and batches a request without an identity gets (local emulators give none; the "
        "stack's APIs always do: an API key or an IAM principal). Unset: such requests are refused 401.",
    )
    work_queue_url: str | None = Field(
        None, alias="WORK_QUEUE_URL", description="SQS queue that fans queued requests out to workers."
    )
    max_attempts: int = Field(3, alias="MAX_ATTEMPTS", ge=1, le=20, description="Tries before a request is FAILED.")
    api_budget_s: float = Field(
        29.0, alias="API_BUDGET_S", gt=0, le=900, description="Time an API caller waits (REST API default: 29 s)."
    )
    stream_budget_s: float = Field(
        840.0,
        alias="STREAM_BUDGET_S",
        gt=0,
        le=900,
        description="Time an API caller waits behind a streaming integration (a stream may last 15 minutes).",
    )
    safety_margin_s: float = Field(
        3.0, alias="SAFETY_MARGIN_S", ge=0, le=60, description="Time kept back for storing and answering."
    )
    expected_prompt_tokens_per_s: float = Field(
        25.0, alias="EXPECTED_PROMPT_TOKENS_PER_S", gt=0, description="Prompt speed assumed until one is measured."
    )
    expected_eval_tokens_per_s: float = Field(
        8.5, alias="EXPECTED_EVAL_TOKENS_PER_S", gt=0, description="Decode speed assumed until one is measured."
    )
    expected_load_s: float = Field(
        15.0, alias="EXPECTED_LOAD_S", ge=0, description="Model load time assumed when the model is not loaded yet."
    )
    result_ttl_days: int | None = Field(
        None, alias="RESULT_TTL_DAYS", ge=1, le=3650, description="Expire stored results after this many days."
    )
    llama_builds_dir: Path | None = Field(
        None,
        alias="LLAMA_CPP_BUILDS_DIR",
        description="Extra llama.cpp builds (AVX-512) to choose from at cold start by the CPU's flags; "
        "unset runs the packaged build.",
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: object) -> object:
        """An empty variable is an unset one, for every setting: CloudFormation's and `sam local`'s
        ``!Ref AWS::NoValue`` leaves an empty string, and so does ``VAR= command`` in a shell. A required
        setting given empty is then reported as missing."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value != ""}
        return data

    @property
    def threads_batch(self) -> int:
        return self.n_threads_batch or self.n_threads


def settings_from(environ: dict[str, str]) -> Settings:
    """Validate settings from an environment mapping; errors name each variable."""
    try:
        return Settings.model_validate({k: v for k, v in environ.items() if k in _VARIABLES})
    except ValidationError as exc:
        raise ConfigurationError(f"invalid environment settings: {describe_validation_error(exc)}") from exc


_VARIABLES = frozenset(field.alias for field in Settings.model_fields.values() if field.alias)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests clear the cache after changing the environment)."""
    return settings_from(dict(os.environ))
