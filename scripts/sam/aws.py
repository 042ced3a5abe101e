"""The local loop's AWS: DynamoDB, SQS and S3 in one moto server where `sam local` containers reach it.

The server listens on the Docker bridge's gateway address; the results table (from template.yaml),
the work queue and the batch bucket are created on it, and an ``--env-vars`` file points every
function at them, and names the API functions' caller (`sam local start-api` gives a request no
identity). The ``db`` step keeps one in the foreground for your own `sam local` calls.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.local.moto_server import (
    MotoDynamoDB,
    create_table_from_template,
    local_client,
)
from scripts.repository import ROOT, TEMPLATE
from scripts.sam.loop import ENV_FILE, LoopError, docker_gateway, require_docker
from scripts.sam.template import UNAUTHENTICATED_OWNER

DEFAULT_TABLE = "llm-results-local"
DEFAULT_QUEUE = "llm-work-local"
DEFAULT_BUCKET = "llm-batches-local"
DEFAULT_DB_PORT = 4510
#: The caller whose files and batches the API's requests are, under `sam local start-api`.
LOCAL_OWNER = "sam-local"
#: The API functions (one per ApiAuth mode): they alone take UNAUTHENTICATED_OWNER.
API_FUNCTIONS = ("ApiFunction", "KeyApiFunction")


@contextlib.contextmanager
def moto_server(host: str, port: int = 0) -> Iterator[MotoDynamoDB]:
    """moto_server.py's moto server (every service moto has, one request at a time) listening on ``host``:
    the Docker bridge's gateway, which containers and this host both reach."""
    server = MotoDynamoDB(port, host=host)
    try:
        server.__enter__()
    except RuntimeError as exc:
        raise LoopError(str(exc)) from exc
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


@dataclass
class LocalAws:
    """The local table and queue, and the `--env-vars` file that points the functions at them."""

    endpoint_url: str
    table: str
    queue_url: str
    env_file: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return local_client(service, self.endpoint_url)

    def item(self, item_id: str) -> dict[str, Any] | None:
        from boto3.dynamodb.types import TypeDeserializer

        found = self.client("dynamodb").get_item(TableName=self.table, Key={"id": {"S": item_id}}, ConsistentRead=True)
        raw = found.get("Item")
        if raw is None:
            return None
        deserializer = TypeDeserializer()
        return {key: deserializer.deserialize(value) for key, value in raw.items()}

    def receive(self, wait_s: int = 2) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = (
            self.client("sqs")
            .receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s)
            .get("Messages", [])
        )
        return messages


def prepare_local_aws(
    endpoint_url: str, env_file: Path, table: str = DEFAULT_TABLE, queue: str = DEFAULT_QUEUE
) -> LocalAws:
    """Create the table (from template.yaml) and the queue on ``endpoint_url``; write the env-vars file."""
    create_table_from_template(endpoint_url, table, TEMPLATE)
    aws = LocalAws(endpoint_url, table, "", env_file)
    aws.queue_url = aws.client("sqs").create_queue(QueueName=queue)["QueueUrl"]
    # The batch bucket too: the template names it from the stack's id, which sam local makes up.
    aws.client("s3").create_bucket(Bucket=DEFAULT_BUCKET)
    aws.env = {
        "TABLE_NAME": table,
        "WORK_QUEUE_URL": aws.queue_url,
        "BATCH_BUCKET": DEFAULT_BUCKET,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url,
        "AWS_ENDPOINT_URL_SQS": endpoint_url,
        "AWS_ENDPOINT_URL_S3": endpoint_url,
    }
    env_file.parent.mkdir(parents=True, exist_ok=True)
    # The CloudFormation-parameter form applies to every function; an entry under a function's logical id adds
    # to it for that function alone (only the API functions take a request's owner).
    document: dict[str, Any] = {
        "Parameters": aws.env,
        **{function: {UNAUTHENTICATED_OWNER: LOCAL_OWNER} for function in API_FUNCTIONS},
    }
    env_file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return aws


@contextlib.contextmanager
def local_aws(env_file: Path, port: int = 0) -> Iterator[LocalAws]:
    require_docker()
    with moto_server(docker_gateway(), port) as server:
        yield prepare_local_aws(server.endpoint_url, env_file)


def db(args: argparse.Namespace) -> int:
    require_docker()
    with moto_server(docker_gateway(), args.port) as server:
        aws = prepare_local_aws(server.endpoint_url, ENV_FILE)
        rel = ENV_FILE.relative_to(ROOT)
        print(f"DynamoDB and SQS (moto): {aws.endpoint_url}; table {aws.table}; queue {aws.queue_url}")
        print(f"env-vars file: {rel}\n")
        print(f"  sam local invoke GenerateFunction --event events/summarize.json --env-vars {rel}")
        print(f"  sam local start-api --env-vars {rel}\n")
        print("Ctrl-C stops it (the table lives in this process).", flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        received = signal.sigwait(stop)
        print(f"stopping ({signal.Signals(received).name})", flush=True)
    return 0
