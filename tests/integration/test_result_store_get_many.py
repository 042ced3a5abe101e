"""Reading many stored items by id (the results store's get_many) in moto server: BatchGetItem, never a scan."""

from __future__ import annotations

from pathlib import Path

from handler.storage.result_store import ResultStore
from tests.support.local_aws import Table


def test_get_many_reads_items_by_id_without_a_scan(service_env: Table, tiny_model: Path) -> None:
    store = ResultStore(service_env.name)
    ids = [f"{n:064x}" for n in range(150)]
    store.items.put_pending_batch([(item_id, {"task": "chat", "request": {"n": n}}) for n, item_id in enumerate(ids)])

    items = store.items.get_many([*ids[:120], "f" * 64, ids[0]])

    assert sorted(items) == sorted(ids[:120])
    assert items[ids[7]].request == {"n": 7}
    assert store.items.statuses(ids[:3]) == dict.fromkeys(ids[:3], "PENDING")
