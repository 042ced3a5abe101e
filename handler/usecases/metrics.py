"""The metrics of a generation: built from its completion, summed over a document's requests, emitted as EMF.

Every numeric field of the Metrics schema (handler/domain/answers.py) is a CloudWatch metric of the same name:
the schema is the one list of metric names.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from handler.core.observability import metrics
from handler.domain.answers import Metrics as GenerationMetrics
from handler.engine import Completion, Engine, peak_rss_mb


def _unit(name: str) -> MetricUnit:
    if name.endswith("_ms"):
        return MetricUnit.Milliseconds
    if name.endswith("_per_s"):
        return MetricUnit.CountPerSecond
    if name.endswith("_mb"):
        return MetricUnit.Megabytes
    return MetricUnit.Count


#: Every numeric field of a generation's metrics becomes a CloudWatch metric of the same name.
METRIC_UNITS = {name: _unit(name) for name in GenerationMetrics.model_fields}


def emit_generation(task: str, generation: GenerationMetrics) -> None:
    """Emit one generation's timings as EMF metrics."""
    for name, value in generation.model_dump().items():
        if value is not None:
            metrics.add_metric(name=name, unit=METRIC_UNITS[name], value=float(value))
    metrics.add_metric(name=f"generations_{task}", unit=MetricUnit.Count, value=1)


def emit_cached(task: str) -> None:
    """Count an answer served from the table without generation."""
    metrics.add_metric(name=f"cached_answers_{task}", unit=MetricUnit.Count, value=1)


def emit_failed(task: str) -> None:
    """Count a stored request that failed for good (FAILED after its last attempt)."""
    metrics.add_metric(name=f"failed_{task}", unit=MetricUnit.Count, value=1)


#: What a run through queued requests counts (handler/usecases/queued_work.RunSummary), each as ``batch_<name>``.
RUN_COUNTS = ("claimed", "done", "failed", "requeued", "left", "dispatched")


def emit_run(counts: dict[str, int], tokens_per_s: float | None) -> None:
    """Emit a run's counts, and its decode speed when it generated anything."""
    for name in RUN_COUNTS:
        metrics.add_metric(name=f"batch_{name}", unit=MetricUnit.Count, value=counts[name])
    if tokens_per_s is not None:
        metrics.add_metric(name="batch_tokens_per_s", unit=MetricUnit.CountPerSecond, value=tokens_per_s)


def _environment(engine: Engine, loaded_now: bool, cold_start: bool) -> dict[str, Any]:
    """The metrics of the execution environment a generation ran in: its load, its threads, its memory."""
    return {
        "load_ms": engine.load_ms if loaded_now else None,
        "cold_start": cold_start,
        "n_threads": engine.n_threads,
        "peak_rss_mb": peak_rss_mb(),
    }


def generation_metrics(completion: Completion, engine: Engine, loaded_now: bool, cold_start: bool) -> GenerationMetrics:
    """The metrics stored and emitted for one generation."""
    return GenerationMetrics(
        prompt_tokens=completion.prompt_tokens,
        prompt_eval_tokens=completion.prompt_eval_tokens,
        prompt_ms=completion.prompt_ms,
        prompt_tokens_per_s=completion.prompt_tokens_per_s,
        completion_tokens=completion.completion_tokens,
        eval_ms=completion.eval_ms,
        eval_tokens_per_s=completion.eval_tokens_per_s,
        eval_steps=completion.eval_runs,
        drafted_tokens=completion.drafted_tokens,
        draft_accepted_tokens=completion.accepted_tokens,
        total_ms=completion.total_ms,
        **_environment(engine, loaded_now, cold_start),
    )


def summed_metrics(
    metrics: list[GenerationMetrics | None], engine: Engine, loaded_now: bool, cold_start: bool
) -> GenerationMetrics:
    """One document's metrics: its requests' counts and times summed, speeds from the sums."""
    present = [m for m in metrics if m is not None]
    prompt_tokens = sum(m.prompt_tokens for m in present)
    prompt_ms = sum(m.prompt_ms for m in present)
    completion_tokens = sum(m.completion_tokens for m in present)
    eval_ms = sum(m.eval_ms for m in present)
    return GenerationMetrics(
        prompt_tokens=prompt_tokens,
        prompt_eval_tokens=sum(m.prompt_eval_tokens for m in present),
        prompt_ms=round(prompt_ms, 3),
        prompt_tokens_per_s=round(prompt_tokens / prompt_ms * 1000.0, 3) if prompt_ms else 0.0,
        completion_tokens=completion_tokens,
        eval_ms=round(eval_ms, 3),
        eval_tokens_per_s=round(completion_tokens / eval_ms * 1000.0, 3) if eval_ms else 0.0,
        eval_steps=sum(m.eval_steps for m in present),
        drafted_tokens=sum(m.drafted_tokens for m in present),
        draft_accepted_tokens=sum(m.draft_accepted_tokens for m in present),
        total_ms=round(sum(m.total_ms for m in present), 3),
        **_environment(engine, loaded_now, cold_start),
    )
