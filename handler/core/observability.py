"""Logger and Metrics singletons (Powertools): one of each per process, imported by every layer that logs.

The generation metrics emitted through them are named in handler/usecases/metrics.py, from the Metrics schema.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "llm-service")
logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "LlmService"), service=SERVICE_NAME)
