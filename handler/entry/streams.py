"""The response stream an API handler writes to (provisional: the streaming runtime's module replaces it)."""

from __future__ import annotations

from typing import Protocol


class ResponseStream(Protocol):
    """Where a streamed response goes: status and headers once, then body bytes as they come."""

    def start(self, status_code: int, headers: dict[str, str]) -> None: ...

    def write(self, data: bytes) -> None: ...

    @property
    def started(self) -> bool: ...
