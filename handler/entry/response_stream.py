"""The response stream an API handler writes to, and the bytes Lambda's HTTP integration streaming expects.

Behind API Gateway's streaming integration a function's response is ``application/vnd.awslambda.http-integration-
response``: a JSON prelude (``statusCode``, ``headers``, ``multiValueHeaders``, ``cookies``), 8 NUL bytes, then
the body bytes as they come (the Node runtime client's ``HttpResponseStream`` writes the same). Where a stream is
invoked without streaming, Lambda buffers those same bytes (``CollectedResponse`` does what it does).
"""

from __future__ import annotations

import json
from typing import Protocol

#: What separates the prelude from the body.
DELIMITER = b"\0" * 8
CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"


class ResponseStream(Protocol):
    """Where a streamed response goes: status and headers once, then body bytes as they come."""

    def start(self, status_code: int, headers: dict[str, str]) -> None: ...

    def write(self, data: bytes) -> None: ...

    @property
    def started(self) -> bool: ...


def http_integration_prelude(status_code: int, headers: dict[str, str]) -> bytes:
    """The prelude of an HTTP integration's streamed response, its delimiter included."""
    prelude = {"statusCode": int(status_code), "headers": headers, "multiValueHeaders": {}, "cookies": []}
    return json.dumps(prelude, separators=(",", ":")).encode("utf-8") + DELIMITER


class CollectedResponse:
    """A response stream kept whole: the bytes Lambda returns for a streamed response invoked without streaming."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def start(self, status_code: int, headers: dict[str, str]) -> None:
        self._started = True
        self.data += http_integration_prelude(status_code, headers)

    def write(self, data: bytes) -> None:
        self.data += data
