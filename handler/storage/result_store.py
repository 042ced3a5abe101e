"""The DynamoDB results table: one item per request id, changed only by conditional writes.

The store holds its parts, each one role over the same table: ``items`` (reads, new PENDING items;
handler/storage/item_access.py), ``leases`` (claims and their ends; handler/storage/leases.py) and ``documents``
(the steps of a document fanned out to the workers; handler/storage/document_steps.py). They share the table's
calls and typed reading (handler/storage/dynamo_table.py); attribute names and values are in
handler/storage/attributes.py.
"""

from __future__ import annotations

from typing import Any

from handler.storage.document_steps import DocumentSteps
from handler.storage.dynamo_table import DynamoTable
from handler.storage.item_access import ItemAccess
from handler.storage.leases import Leases


class ResultStore:
    """One results table: its items, the leases on them, and the steps of documents."""

    def __init__(self, table_name: str, table: Any | None = None, ttl_days: int | None = None) -> None:
        """``table``: a boto3 Table resource (or a stand-in for it); by default one is made for ``table_name``.
        ``ttl_days``: how long new items live before DynamoDB expires them (None: forever)."""
        self.dynamo = DynamoTable(table_name, table, ttl_days)
        self.items = ItemAccess(self.dynamo)
        self.leases = Leases(self.dynamo, self.items)
        self.documents = DocumentSteps(self.dynamo)
