"""Logger and Metrics singletons (Powertools), and the metric names, taken from the Metrics schema."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from handler.schemas import Metrics as GenerationMetrics

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "llm-service")
logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "LlmService"), service=SERVICE_NAME)


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
