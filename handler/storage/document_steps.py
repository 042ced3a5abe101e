"""The results table's steps of a document fanned out to the workers (handler/usecases/documents.py).

A document hands its chunk requests over and stays RUNNING, held by no invocation, with the set of its chunks
not yet ended; each chunk that ends leaves the set in a conditional write, and the one write that empties it
queues the document again, exactly once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from handler.domain.answers import Status
from handler.domain.stored_item import StoredItem
from handler.storage import attributes
from handler.storage.attributes import KEY, STATUS, to_dynamo
from handler.storage.dynamo_table import DynamoTable

#: The lease owner of a document whose chunks the workers are generating: no invocation holds it.
WAITING_FOR_CHUNKS = "waiting-for-chunks"


class DocumentSteps:
    """A document's progress, its hand-over to its chunks, each chunk's end counted, and its queueing again."""

    def __init__(self, dynamo: DynamoTable) -> None:
        self._dynamo = dynamo
        self._table = dynamo.resource  # the boto3 Table its calls go to

    def note_progress(self, item_id: str, progress: dict[str, Any]) -> None:
        """Record how far a RUNNING item's work has come (a document's chunks); nothing when it is not RUNNING."""
        self._dynamo.call(
            f"note progress of {item_id}",
            lambda: self._table.update_item(
                Key={KEY: item_id},
                UpdateExpression="SET progress = :progress, updated_at = :now",
                ConditionExpression="#status = :running",
                ExpressionAttributeNames={"#status": STATUS},
                ExpressionAttributeValues=to_dynamo(
                    {":progress": progress, ":running": Status.RUNNING, ":now": attributes.utc_now().isoformat()}
                ),
            ),
            conditional=True,
        )

    def wait_for_chunks(
        self,
        document_id: str,
        owner: str,
        chunk_ids: set[str],
        progress: dict[str, Any],
        fanned_out: dict[str, int],
        wait_s: float,
    ) -> bool:
        """Hand a claimed document over to its chunks: it stays RUNNING, held by no invocation, until the last
        of ``chunk_ids`` ends (``chunk_ended``, then ``queue_again``) or ``wait_s`` passes. False when ``owner``
        lost the lease."""
        until = (attributes.utc_now() + timedelta(seconds=wait_s)).isoformat()
        written = self._dynamo.call(
            f"hand {document_id} to its chunks",
            lambda: self._table.update_item(
                Key={KEY: document_id},
                UpdateExpression="SET chunks_left = :chunks, progress = :progress, fanned_out = :fanned, "
                "lease_owner = :waiting, lease_until = :until, updated_at = :now",
                ConditionExpression="#status = :running AND lease_owner = :owner",
                ExpressionAttributeNames={"#status": STATUS},
                ExpressionAttributeValues={
                    ":chunks": set(chunk_ids),
                    **to_dynamo(
                        {
                            ":progress": progress,
                            ":fanned": fanned_out,
                            ":waiting": WAITING_FOR_CHUNKS,
                            ":until": until,
                            ":now": attributes.utc_now().isoformat(),
                            ":running": Status.RUNNING,
                            ":owner": owner,
                        }
                    ),
                },
            ),
            conditional=True,
        )
        return written is not None

    def await_chunk(self, chunk_id: str, document_id: str, fields: dict[str, Any]) -> StoredItem:
        """Queue a chunk's request unless it exists, and note the document waiting on it, in one write.

        Returns the chunk's item as it is after the write: a DONE or FAILED one ended before the note was
        made, so whoever ended it could not tell the document.
        """
        names, values, assignments = self._dynamo.upsert(attributes.utc_now(), fields, keep_existing=True)
        names["#status"] = STATUS
        values.update({":pending": Status.PENDING, ":zero": 0})
        assignments += [
            "#status = if_not_exists(#status, :pending)",
            "attempts = if_not_exists(attempts, :zero)",
            "updated_at = if_not_exists(updated_at, :now)",
        ]
        response = self._dynamo.call(
            f"queue chunk {chunk_id}",
            lambda: self._table.update_item(
                Key={KEY: chunk_id},
                UpdateExpression=f"SET {', '.join(assignments)} ADD documents_waiting :document",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={**to_dynamo(values), ":document": {document_id}},
                ReturnValues="ALL_NEW",
            ),
        )
        return self._dynamo.typed(response["Attributes"])

    def chunk_ended(self, document_id: str, chunk_id: str) -> bool:
        """Count a chunk of a waiting document as ended: True for the one call that ended its last chunk.

        The chunk leaves the document's set in a conditional write, so each chunk counts once however
        often it is reported, and exactly one report empties the set (DynamoDB then drops the attribute).
        """
        response = self._dynamo.call(
            f"count chunk {chunk_id} of {document_id}",
            lambda: self._table.update_item(
                Key={KEY: document_id},
                UpdateExpression="DELETE chunks_left :chunk "
                "SET progress.done = progress.done + :one, updated_at = :now",
                ConditionExpression="contains(chunks_left, :chunk_id)",
                ExpressionAttributeValues={
                    ":chunk": {chunk_id},
                    ":chunk_id": chunk_id,
                    ":one": 1,
                    ":now": attributes.utc_now().isoformat(),
                },
                ReturnValues="ALL_NEW",
            ),
            conditional=True,
        )
        return response is not None and "chunks_left" not in response["Attributes"]

    def queue_again(self, document_id: str) -> bool:
        """Queue again a document whose chunks have all ended (PENDING); its wait does not count as an attempt."""
        response = self._dynamo.call(
            f"queue {document_id} again",
            lambda: self._table.update_item(
                Key={KEY: document_id},
                UpdateExpression="SET #status = :pending, updated_at = :now ADD attempts :minus_one "
                "REMOVE lease_owner, lease_until",
                ConditionExpression="#status = :running AND lease_owner = :waiting "
                "AND attribute_not_exists(chunks_left)",
                ExpressionAttributeNames={"#status": STATUS},
                ExpressionAttributeValues={
                    ":pending": Status.PENDING,
                    ":running": Status.RUNNING,
                    ":waiting": WAITING_FOR_CHUNKS,
                    ":now": attributes.utc_now().isoformat(),
                    ":minus_one": -1,
                },
            ),
            conditional=True,
        )
        return response is not None
