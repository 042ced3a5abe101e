"""The API's Files and Batches routes, as OpenAI's (handler/usecases/openai_batches.py): upload a batch file, create
a batch over it, poll it, read its output file. Registered on the resolver when handler/entry/api.py imports this
module.

Whose it is: the caller's identity from the request context, which API Gateway fills in after it has checked the
credentials: the API key's id (API-key mode) or the IAM principal's ARN (IAM mode). A caller reaches only what its
own identity created; any other id is answered 404, as one that does not exist.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, File, Form, Path, Query, UploadFile

from handler.core.errors import ConfigurationError, Unauthenticated
from handler.entry.api_request_body import MAX_UPLOAD_BYTES
from handler.entry.api_resolver import app, route
from handler.entry.api_responses import openai_error_response, openai_object_responses
from handler.entry.runtime import get_service
from handler.formats.jsonl import JSONL_MEDIA_TYPE
from handler.formats.openai_files import (
    MAX_BATCH_LINES,
    Batch,
    BatchCreate,
    BatchList,
    FileDeleted,
    FileList,
    FileObject,
)
from handler.storage.bucket import BatchBucket
from handler.storage.caller_files import CallerFiles
from handler.usecases.openai_batches import CallerBatches, owner_key

FileId = Annotated[str, Path(min_length=1, max_length=64, description="A file's id (`file-...`).")]
BatchId = Annotated[str, Path(min_length=1, max_length=64, description="A batch's id (`batch_...`).")]
After = Annotated[str | None, Query(max_length=64, description="The id the page starts after (its `last_id`).")]
Limit = Annotated[int, Query(ge=1, le=100, description="Objects in a page, 1 to 100.")]

_TOO_LARGE = openai_error_response(
    f"invalid_request_error: the upload exceeds {MAX_UPLOAD_BYTES} bytes (Lambda's 6 MB request payload holds it "
    "base64-encoded); split the batch into smaller files."
)
_NOT_MULTIPART = openai_error_response("invalid_request_error: send the upload as multipart/form-data.")


def _caller() -> CallerBatches:
    """The caller's files and batches, from its identity in the request context."""
    service = get_service()
    settings = service.settings
    if not settings.batch_bucket or service.stored_requests.table is None:
        raise ConfigurationError("files and batches are not served here: BATCH_BUCKET and TABLE_NAME must be set")
    identity = app.current_event.request_context.identity
    if identity.api_key_id:
        owner = owner_key("api-key", identity.api_key_id)
    elif identity.user_arn:
        owner = owner_key("iam", identity.user_arn)
    elif settings.unauthenticated_owner:
        owner = owner_key("unauthenticated", settings.unauthenticated_owner)
    else:
        raise Unauthenticated(
            "this request carries no caller identity (an API key or an IAM principal) to keep files and batches under"
        )
    return CallerBatches(service, CallerFiles(BatchBucket(settings.batch_bucket), owner))


def _json(value: Any) -> Response[Any]:
    return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, value)


# -- files ----------------------------------------------------------------------------------------------------


@route(
    "POST",
    "/v1/files",
    takes_body=False,
    takes_upload=True,
    operation_id="createFile",
    summary="Upload a batch file (OpenAI-style)",
    description=f"A JSONL file of OpenAI Batch request lines (`purpose: batch`), at most {MAX_UPLOAD_BYTES} bytes "
    f"of multipart body and {MAX_BATCH_LINES} lines. Kept under the caller's identity.",
    responses=openai_object_responses(
        FileObject, 200, 400, 401, 413, 415, 405, 503, changed={413: _TOO_LARGE, 415: _NOT_MULTIPART}
    ),
    tags=["openai"],
)
def create_file(
    file: Annotated[UploadFile, File(description="The JSONL file.")],
    purpose: Annotated[Literal["batch"], Form(description="`batch`: the one purpose served here.")],
) -> Response[FileObject]:
    name = (file.filename or "upload.jsonl")[:255]
    return _json(_caller().upload(name, purpose, file.content))


@route(
    "GET",
    "/v1/files",
    takes_body=False,
    operation_id="listFiles",
    summary="List the caller's files (OpenAI-style)",
    responses=openai_object_responses(FileList, 200, 400, 401, 405, 503),
    tags=["openai"],
)
def list_files(
    after: After = None,
    limit: Limit = 100,
    order: Annotated[Literal["asc", "desc"], Query(description="By creation time; newest first by default.")] = "desc",
    purpose: Annotated[
        Literal["batch", "batch_output"] | None, Query(description="Only files of this purpose.")
    ] = None,
) -> Response[FileList]:
    return _json(_caller().file_list(after, limit, order, purpose))


@route(
    "GET",
    "/v1/files/<file_id>",
    takes_body=False,
    operation_id="retrieveFile",
    summary="Describe a file (OpenAI-style)",
    responses=openai_object_responses(FileObject, 200, 400, 401, 404, 405, 503),
    tags=["openai"],
)
def retrieve_file(file_id: FileId) -> Response[FileObject]:
    return _json(_caller().file(file_id))


@route(
    "DELETE",
    "/v1/files/<file_id>",
    takes_body=False,
    operation_id="deleteFile",
    summary="Delete a file (OpenAI-style)",
    description="A batch still running over a deleted input file fails (`input_file_deleted`).",
    responses=openai_object_responses(FileDeleted, 200, 400, 401, 404, 405, 503),
    tags=["openai"],
)
def delete_file(file_id: FileId) -> Response[FileDeleted]:
    return _json(_caller().delete(file_id))


@route(
    "GET",
    "/v1/files/<file_id>/content",
    takes_body=False,
    operation_id="downloadFile",
    summary="Read a file's bytes (OpenAI-style)",
    description="A batch's output and error files are JSONL in OpenAI's output format: `id`, `custom_id`, "
    "`response` {`status_code`, `request_id`, `body`}, `error`.",
    responses=openai_object_responses(None, 200, 400, 401, 404, 405, 503),
    tags=["openai"],
)
def download_file(file_id: FileId) -> Response[Any]:
    data = _caller().content(file_id)
    try:
        body: str | bytes = data.decode("utf-8")
    except UnicodeDecodeError:
        body = data  # answered base64-encoded, the bytes as they were uploaded
    return Response(HTTPStatus.OK, JSONL_MEDIA_TYPE, body)


# -- batches --------------------------------------------------------------------------------------------------


@route(
    "POST",
    "/v1/batches",
    takes_body=True,
    operation_id="createBatch",
    summary="Create a batch (OpenAI-style)",
    description="Validates the input file at once: a line that is not a Batch API request fails the batch (status "
    "`failed`, `errors` naming line and reason) and nothing is queued; a line whose body the chat-completions route "
    "refuses is answered in the error file. A valid batch is `in_progress`; each scheduled run queues more of its "
    "lines, keeps `request_counts` current and, once every line is answered, writes its output and error files.",
    responses=openai_object_responses(Batch, 200, 400, 401, 404, 413, 415, 429, 405, 503),
    tags=["openai"],
)
def create_batch(request: Annotated[BatchCreate, Body()]) -> Response[Batch]:
    return _json(_caller().create(request))


@route(
    "GET",
    "/v1/batches",
    takes_body=False,
    operation_id="listBatches",
    summary="List the caller's batches (OpenAI-style)",
    responses=openai_object_responses(BatchList, 200, 400, 401, 405, 503),
    tags=["openai"],
)
def list_batches(after: After = None, limit: Limit = 20) -> Response[BatchList]:
    return _json(_caller().batch_list(after, limit))


@route(
    "GET",
    "/v1/batches/<batch_id>",
    takes_body=False,
    operation_id="retrieveBatch",
    summary="Read a batch (OpenAI-style)",
    responses=openai_object_responses(Batch, 200, 400, 401, 404, 405, 503),
    tags=["openai"],
)
def retrieve_batch(batch_id: BatchId) -> Response[Batch]:
    return _json(_caller().batch(batch_id))


@route(
    "POST",
    "/v1/batches/<batch_id>/cancel",
    takes_body=False,
    operation_id="cancelBatch",
    summary="Cancel a batch (OpenAI-style)",
    description="`cancelling` at once: no more of its lines are queued; lines already queued finish (for at most "
    "10 minutes), then it is `cancelled`, what finished in its output file and the rest in its error file.",
    responses=openai_object_responses(Batch, 200, 400, 401, 404, 409, 405, 503),
    tags=["openai"],
)
def cancel_batch(batch_id: BatchId) -> Response[Batch]:
    return _json(_caller().cancel(batch_id))
