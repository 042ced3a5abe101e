"""The error tree: the caller's mistakes and the service's failures, each answered with its class's status."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from handler.core import errors
from handler.core.errors import ClientError, ServerError, ServiceError, StoreError, status_of


def _descendants(base: type[ServiceError]) -> list[type[ServiceError]]:
    found = []
    for cls in base.__subclasses__():
        found.append(cls)
        found.extend(_descendants(cls))
    return found


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidRequest, HTTPStatus.UNPROCESSABLE_ENTITY),
        (errors.InputTooLong, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
        (errors.OutputInvalid, HTTPStatus.UNPROCESSABLE_ENTITY),
        (errors.MalformedJson, HTTPStatus.BAD_REQUEST),
        (errors.PayloadTooLarge, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
        (errors.UnsupportedMediaType, HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
        (errors.NotFound, HTTPStatus.NOT_FOUND),
        (errors.MethodNotAllowed, HTTPStatus.METHOD_NOT_ALLOWED),
        (errors.ConfigurationError, HTTPStatus.SERVICE_UNAVAILABLE),
        (errors.ModelLoadError, HTTPStatus.SERVICE_UNAVAILABLE),
        (errors.GenerationError, HTTPStatus.SERVICE_UNAVAILABLE),
        (errors.ChunkFailed, HTTPStatus.SERVICE_UNAVAILABLE),
        (errors.DeadlineReached, HTTPStatus.SERVICE_UNAVAILABLE),
        (errors.StoreError, HTTPStatus.SERVICE_UNAVAILABLE),
        (errors.ServiceError, HTTPStatus.SERVICE_UNAVAILABLE),
    ],
)
def test_each_error_is_answered_with_its_class_status(error: type[ServiceError], status: HTTPStatus) -> None:
    assert status_of(error("it failed")) == status


def test_the_caller_mistakes_are_4xx_and_the_service_failures_5xx() -> None:
    # GIVEN every error class below the two bases
    assert _descendants(ClientError)
    assert _descendants(ServerError)
    # THEN a client error's status is 4xx and a server error's 5xx
    client: list[type[ServiceError]] = [ClientError, *_descendants(ClientError)]
    server: list[type[ServiceError]] = [ServerError, *_descendants(ServerError)]
    assert all(400 <= cls("x").status() < 500 for cls in client)
    assert all(500 <= cls("x").status() < 600 for cls in server)
    # AND every concrete error is one or the other
    assert set(_descendants(ServiceError)) == {*client, *server}


def test_a_throttled_table_is_429_and_a_failed_one_503() -> None:
    assert status_of(StoreError("over capacity", throttled=True)) == HTTPStatus.TOO_MANY_REQUESTS
    assert status_of(StoreError("cannot read", throttled=False)) == HTTPStatus.SERVICE_UNAVAILABLE


def test_an_error_the_service_does_not_know_is_500() -> None:
    assert status_of(ValueError("a bug")) == HTTPStatus.INTERNAL_SERVER_ERROR
