"""Reading many stored items by id (the results store's get_many) against a scripted client: what a full or
throttled response leaves unread is read again, with backoff only when nothing came.
"""

from __future__ import annotations

from typing import Any

import pytest

from handler.core.errors import StoreError
from handler.storage.result_store import ResultStore


class _BatchGetClient:
    """A DynamoDB client that answers BatchGetItem in scripted rounds: (items read, keys left unprocessed)."""

    def __init__(self, table: str, rounds: list[tuple[int, int]]) -> None:
        self.table, self.rounds, self.calls = table, rounds, 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 (boto3's name)
        keys = RequestItems[self.table]["Keys"]
        read, left = self.rounds[min(self.calls, len(self.rounds) - 1)]
        self.calls += 1
        items = [{"id": key["id"], "status": "DONE"} for key in keys[:read]]
        unprocessed = {self.table: {**RequestItems[self.table], "Keys": keys[read : read + left]}} if left else {}
        return {"Responses": {self.table: items}, "UnprocessedKeys": unprocessed}


class _FakeTable:
    def __init__(self, client: _BatchGetClient) -> None:
        self.meta = type("Meta", (), {"client": client})()


def test_get_many_reads_again_what_a_full_response_left_and_backs_off_only_when_nothing_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("handler.storage.item_access.time.sleep", sleeps.append)
    ids = [f"{n:064x}" for n in range(10)]

    # A response stops at 16 MB: each round reads some and leaves the rest; no backoff is needed
    client = _BatchGetClient("t", [(3, 7), (3, 4), (3, 1), (1, 0)])
    assert sorted(ResultStore("t", table=_FakeTable(client)).items.get_many(ids)) == ids
    assert (client.calls, sleeps) == (4, [])

    # Throttled: rounds that read nothing back off, and give up after the attempts
    client = _BatchGetClient("t", [(2, 8), (0, 8)])
    with pytest.raises(StoreError, match="left keys unread after 6 attempts"):
        ResultStore("t", table=_FakeTable(client)).items.get_many(ids)
    assert client.calls == 7
    assert len(sleeps) == 5
