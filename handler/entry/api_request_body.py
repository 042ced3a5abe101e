"""The API's request body, checked before it is parsed: its bytes (base64 or not), its size limit, its media
type and well-formed JSON (handler/entry/api_resolver.py runs these checks on every route that takes a body).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from handler.core.errors import InvalidRequest, MalformedJson, UnsupportedMediaType

#: Largest request body accepted, checked before the body is parsed (API Gateway itself allows 10 MB): a
#: queued request is stored whole, and its item, with the result added later, must stay under DynamoDB's 400 KB.
MAX_BODY_BYTES = 256 * 1024
#: Largest upload (POST /v1/files, the whole multipart body): Lambda takes a request payload of at most 6 MB, and
#: API Gateway passes a multipart body base64-encoded (4 bytes for 3), with the event around it.
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MULTIPART_FORM_DATA = "multipart/form-data"


def body_bytes(event: BaseProxyEvent) -> bytes:
    body = event.body or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedJson("the request body is marked base64-encoded but is not valid base64") from exc
    return body.encode("utf-8", errors="surrogatepass")


def check_media_type(content_type: str | None) -> None:
    if not content_type:
        raise UnsupportedMediaType("send the body with Content-Type: application/json")
    media_type, *parameters = content_type.split(";")
    if media_type.strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {media_type.strip()[:100]!r}",
            log_message="Content-Type is not application/json",
            content_type=content_type[:200],
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {"utf-8", "utf8"}:
            raise UnsupportedMediaType(
                "JSON is UTF-8: send charset=utf-8 or no charset", content_type=content_type[:200]
            )


def check_multipart(content_type: str | None) -> None:
    """An upload is multipart/form-data with its boundary (Powertools' parser needs one)."""
    media_type, *parameters = (content_type or "").split(";")
    if media_type.strip().lower() != MULTIPART_FORM_DATA:
        shown = media_type.strip()[:100]
        raise UnsupportedMediaType(
            f"Content-Type must be {MULTIPART_FORM_DATA} (fields file and purpose), not {shown!r}",
            log_message=f"Content-Type is not {MULTIPART_FORM_DATA}",
        )
    boundaries = [
        p.strip()[len("boundary=") :].strip('"') for p in parameters if p.strip().lower().startswith("boundary=")
    ]
    if not any(boundaries):
        raise UnsupportedMediaType(f"Content-Type {MULTIPART_FORM_DATA} needs its boundary parameter")


def check_json(body: bytes) -> None:
    if not body.strip():
        raise MalformedJson("the request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJson(f"the request body is not UTF-8 (invalid byte at offset {exc.start})") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant)
        # A "\ud800" escape parses into a lone surrogate, which is no text: the model and the table refuse it.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        raise MalformedJson(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            line=exc.lineno,
            column=exc.colno,
        ) from exc
    except UnicodeEncodeError as exc:
        raise MalformedJson("the request body has a \\u escape of an unpaired UTF-16 surrogate") from exc
    except RecursionError as exc:
        raise MalformedJson("the request body is nested too deeply") from exc
    except ValueError as exc:  # int() refuses numbers of more than 4300 digits
        raise MalformedJson("the request body has a number too long to read") from exc
    if isinstance(value, list):
        # One request per body: an array would otherwise be read as its first element, the rest dropped unsaid.
        problem = f"Input should be a valid dictionary: one request per body, got an array of {len(value)}"
        raise InvalidRequest(f"body: {problem}", fields=[{"field": "body", "problem": problem}])


def _reject_constant(name: str) -> Any:
    raise MalformedJson(f"the request body is not valid JSON: {name} is not a JSON number")
