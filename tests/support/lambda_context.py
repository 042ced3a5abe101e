"""A Lambda context object as the handlers read it, for calling them in-process or in a function's child process."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass
class FakeLambdaContext:
    """One invocation's context: its own request id (a lease owner of its own), and a remaining time that runs down
    with the clock from ``remaining_ms`` (Lambda's longest invocation by default)."""

    function_name: str = "generate"
    memory_limit_in_mb: int = 10240
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:generate"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 900_000
    _started: float = field(default_factory=time.monotonic, repr=False)

    def get_remaining_time_in_millis(self) -> int:
        return max(int(self.remaining_ms - (time.monotonic() - self._started) * 1000), 0)
