"""moto in server mode, the local stand-in for DynamoDB (and the other AWS APIs moto has), and its dummy credentials.

Importing this module has no side effects; the server starts inside its context manager.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from scripts.local.cfn_template import table_spec_from_template, ttl_spec_from_template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DUMMY_CREDENTIALS: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
DEFAULT_REGION = "us-east-1"


def local_client(service: str, endpoint_url: str, region: str = DEFAULT_REGION) -> Any:
    """A client of ``service`` for a local endpoint (moto server serves them all), with dummy credentials passed
    explicitly."""
    import boto3

    # The stubs type boto3.client per literal service name; this one is a parameter.
    make_client: Any = boto3.client
    return make_client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
    )


def dynamodb_client(endpoint_url: str, region: str = DEFAULT_REGION) -> DynamoDBClient:
    """A DynamoDB client for a local endpoint."""
    client: DynamoDBClient = local_client("dynamodb", endpoint_url, region)
    return client


def create_table_from_template(
    endpoint_url: str, table_name: str, template_path: Path, logical_id: str = "ResultsTable"
) -> None:
    """Create the template's table on ``endpoint_url`` (no error if it exists) and apply its TTL."""
    spec = table_spec_from_template(template_path, logical_id)
    ttl = ttl_spec_from_template(template_path, logical_id)
    client = dynamodb_client(endpoint_url)
    with contextlib.suppress(client.exceptions.ResourceInUseException):
        client.create_table(TableName=table_name, **spec)
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    if ttl is None:
        return
    current = client.describe_time_to_live(TableName=table_name).get("TimeToLiveDescription", {})
    enabled_now = current.get("TimeToLiveStatus") in {"ENABLED", "ENABLING"}
    # DynamoDB rejects an update that does not change the TTL state.
    if enabled_now == ttl["Enabled"] and (not enabled_now or current.get("AttributeName") == ttl["AttributeName"]):
        return
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": ttl["Enabled"]},
    )


def s3_client(endpoint_url: str, region: str = DEFAULT_REGION) -> Any:
    """An S3 client for a local endpoint (moto server serves S3 beside DynamoDB)."""
    return local_client("s3", endpoint_url, region)


def create_bucket(endpoint_url: str, bucket_name: str) -> None:
    """Create the bucket ``bucket_name`` on ``endpoint_url``; no error if it exists."""
    client = s3_client(endpoint_url)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
        client.create_bucket(Bucket=bucket_name)


# --- DynamoDB -------------------------------------------------------------------------------------


class MotoDynamoDB:
    """moto in server mode on a free loopback port.

    moto keeps its state per Python process, so two servers in one process share their tables.
    Requests are served one at a time: DynamoDB applies each conditional write atomically, while
    moto checks a condition and then writes, so two concurrent claims of one item could both pass.
    """

    def __init__(
        self, port: int = 0, region: str = DEFAULT_REGION, *, quiet: bool = True, host: str = "127.0.0.1"
    ) -> None:
        #: The address to listen on: loopback, or an address containers reach (the Docker bridge's gateway).
        self.host = host
        self.port = port
        self.region = region
        self.quiet = quiet
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> MotoDynamoDB:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        werkzeug_log = logging.getLogger("werkzeug")
        if self.quiet and werkzeug_log.level == logging.NOTSET:
            # Otherwise werkzeug prints a line on stderr for every request.
            werkzeug_log.setLevel(logging.WARNING)
        app = DomainDispatcherApplication(create_backend_app)
        one_at_a_time = threading.Lock()

        def serialized(environ: dict[str, Any], start_response: Any) -> Any:
            with one_at_a_time:
                return app(environ, start_response)

        try:
            # Port 0 lets the server bind a free port itself: no window for another process to take it.
            self._server = make_server(
                self.host, self.port, serialized, threaded=True, request_handler=MotoRequestHandler
            )
        except OSError as exc:
            raise RuntimeError(f"cannot start moto on {self.host}:{self.port}: {exc}") from exc
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def client(self) -> DynamoDBClient:
        """A boto3 DynamoDB client for this server (dummy credentials)."""
        return dynamodb_client(self.endpoint_url, self.region)
