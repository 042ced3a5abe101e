"""One caller's files and batches (OpenAI's Files and Batches API) in the batch bucket, under a key of its own.

Layout, where ``<owner>`` is a hash of the caller's identity (handler/usecases/openai_batches.owner_key):

- ``files/<owner>/<file_id>.data``: a file's bytes; ``files/<owner>/<file_id>.json``: its ``file`` object.
  The object is written after the bytes and removed before them: a file is listed only when it is whole.
- ``batches/<owner>/<batch_id>.json``: a batch's ``batch`` object; ``batches/<owner>/<batch_id>.cancel``: the
  caller's cancel request, an object of its own so that the API never writes the record a scheduled run writes.

Another caller's id is simply not under this caller's prefix: it reads as absent, and the API answers 404.
"""

from __future__ import annotations

import json
import re

from handler.formats.openai_files import BATCH_ID_PATTERN, FILE_ID_PATTERN, Batch, FileObject
from handler.storage.bucket import BatchBucket

FILES_PREFIX = "files/"
BATCHES_PREFIX = "batches/"
_RECORD = ".json"
_DATA = ".data"
_CANCEL = ".cancel"


class CallerFiles:
    """The files and batches of one owner: read, written and listed under that owner's prefixes only."""

    def __init__(self, bucket: BatchBucket, owner: str) -> None:
        self.bucket = bucket
        self.owner = owner
        self._files = f"{FILES_PREFIX}{owner}/"
        self._batches = f"{BATCHES_PREFIX}{owner}/"

    # -- files -----------------------------------------------------------------------------------------

    def data_key(self, file_id: str) -> str:
        return f"{self._files}{file_id}{_DATA}"

    def put_file(self, record: FileObject, content: bytes, media_type: str) -> None:
        self.bucket.write(self.data_key(record.id), content, media_type)
        self.bucket.write_json(f"{self._files}{record.id}{_RECORD}", record.model_dump(mode="json"))

    def file(self, file_id: str) -> FileObject | None:
        if not re.fullmatch(FILE_ID_PATTERN, file_id):  # never a key built from anything else the caller sent
            return None
        raw = self.bucket.read_if_present(f"{self._files}{file_id}{_RECORD}")
        return FileObject.model_validate(json.loads(raw)) if raw is not None else None

    def content(self, file_id: str) -> bytes | None:
        if not re.fullmatch(FILE_ID_PATTERN, file_id):
            return None
        return self.bucket.read_if_present(self.data_key(file_id))

    def delete_file(self, file_id: str) -> None:
        self.bucket.delete(f"{self._files}{file_id}{_RECORD}")
        self.bucket.delete(self.data_key(file_id))

    def file_ids(self, after: str | None, newest_first: bool = True) -> list[str]:
        """The ids of this caller's files after ``after`` (exclusive), in list order."""
        return _ids_after(self.bucket.keys(self._files), self._files, after, newest_first)

    # -- batches ---------------------------------------------------------------------------------------

    def put_batch(self, batch: Batch) -> None:
        self.bucket.write_json(f"{self._batches}{batch.id}{_RECORD}", batch.model_dump(mode="json"))

    def batch(self, batch_id: str) -> Batch | None:
        if not re.fullmatch(BATCH_ID_PATTERN, batch_id):
            return None
        raw = self.bucket.read_if_present(f"{self._batches}{batch_id}{_RECORD}")
        return Batch.model_validate(json.loads(raw)) if raw is not None else None

    def request_cancel(self, batch_id: str, at: int) -> None:
        self.bucket.write_json(f"{self._batches}{batch_id}{_CANCEL}", {"cancelling_at": at})

    def cancel_requested_at(self, batch_id: str) -> int | None:
        """When the caller asked to cancel the batch; None if it did not."""
        if not re.fullmatch(BATCH_ID_PATTERN, batch_id):
            return None
        raw = self.bucket.read_if_present(f"{self._batches}{batch_id}{_CANCEL}")
        return int(json.loads(raw)["cancelling_at"]) if raw is not None else None

    def batch_ids(self, after: str | None) -> list[str]:
        """The ids of this caller's batches after ``after`` (exclusive), newest first."""
        return _ids_after(self.bucket.keys(self._batches), self._batches, after, newest_first=True)


def _ids_after(keys: list[str], prefix: str, after: str | None, newest_first: bool) -> list[str]:
    """The ids after ``after`` (exclusive) in list order. Ids sort newest first
    (handler/formats/openai_files.py), so S3's ascending key order is the newest-first order, and a cursor
    whose object was deleted since still says where the page starts."""
    ids = [key[len(prefix) : -len(_RECORD)] for key in keys if key.endswith(_RECORD)]
    if not newest_first:
        ids.reverse()
    if after is not None:
        ids = [found for found in ids if (found > after) == newest_first and found != after]
    return ids
