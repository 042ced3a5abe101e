"""The batch bucket's S3 events: each batch file put under ``input/`` is read, its lines queued, its batch opened."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.core.errors import InvalidRequest, StoreError
from handler.core.observability import logger, metrics
from handler.entry.runtime import error_answer, get_service, preload
from handler.storage.bucket import INPUT_PREFIX, INPUT_SUFFIX, BatchBucket
from handler.usecases import batch_files


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def batch_file_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Queue the requests of each batch file an S3 event names (``input/*.jsonl`` in the batch bucket).

    A file that cannot be read is raised, so that S3's asynchronous invocation tries again; one bad line
    is only that line's error.
    """
    try:
        records = event.get("Records") if isinstance(event, dict) else None
        if not isinstance(records, list):
            raise InvalidRequest("the batch-files handler takes an S3 event: an object whose Records is a list")
        service = get_service()
        files = []
        for record in S3Event(event).records:
            key = unquote_plus(record.s3.get_object.key)
            if not (key.startswith(INPUT_PREFIX) and key.endswith(INPUT_SUFFIX)):
                logger.info("not a batch file; skipped", key_prefix=key.split("/", 1)[0])
                continue
            bucket = BatchBucket(record.s3.bucket.name)
            files.append(batch_files.receive(service, bucket, key, record.s3.get_object.etag))
        return {"files": files}
    except StoreError:
        raise  # S3 or the table could not be reached: the invocation is retried
    except Exception as exc:  # every other failure is answered in the one error shape, never as a traceback
        return error_answer(exc)


preload()
