"""One line of a batch file, as read: the native request it means, or the faults that name its fields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from handler.core.errors import InvalidRequest, describe_problems


@dataclass(frozen=True)
class BatchLine:
    """One line of a batch file, read.

    ``request`` is the native request the line means (None when the line is invalid); ``problem`` says
    why the line is invalid, naming its fields, never quoting what they hold. ``caller_id`` is the
    line's ``custom_id`` or ``recordId`` (one filled in for a Bedrock record without one, as Bedrock
    does), and None for native lines and for lines whose id is missing, not a string, or repeats an
    earlier line's: a caller id is reported once. ``code``, ``status`` and ``param`` type the problem:
    ``status`` is the HTTP status the endpoint answers for a request it refuses (the body's fault),
    None when the line itself is not a request of its format.
    """

    number: int
    caller_id: str | None
    request: dict[str, Any] | None
    problem: str | None = None
    original: Any = None
    code: str | None = None
    status: int | None = None
    param: str | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Fault:
    """One thing wrong with a line: the fields and problem (no value), typed as ``BatchLine`` types it."""

    message: str
    code: str
    status: int | None = None
    param: str | None = None


def line_of(
    number: int, caller_id: str | None, request: dict[str, Any] | None, faults: list[Fault], value: Any
) -> BatchLine:
    if not faults:
        return BatchLine(number, caller_id, request, None, value)
    # The line's own faults come first: a body refused as a request is the endpoint's answer only when
    # the line around it is sound.
    first = next((fault for fault in faults if fault.status is None), faults[0])
    problem = "; ".join(fault.message for fault in faults)
    return BatchLine(number, caller_id, None, problem, value, first.code, first.status, first.param)


def read_caller_id(
    value: dict[str, Any], name: str, number: int, seen: dict[str, int]
) -> tuple[str | None, list[Fault]]:
    """The line's id, registered as seen; or the fault with it (a repeated id is the later line's fault)."""
    given = value.get(name)
    if name not in value:
        return None, [Fault(f"{name}: required", f"missing_{_snake(name)}")]
    if not isinstance(given, str) or not given:
        return None, [Fault(f"{name}: must be a non-empty string", f"invalid_{_snake(name)}")]
    if given in seen:
        message = f"{name}: repeats the one of line {seen[given]} (each line's {name} must be unique in a file)"
        return None, [Fault(message, f"duplicate_{_snake(name)}")]
    seen[given] = number
    return given, []


def _snake(name: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in name)


def refused(problems: list[dict[str, Any]], rename: Callable[[str], str]) -> Fault:
    """A request refused for its fields: 400, the problems named as the line names them, without values."""
    renamed = [{**problem, "field": rename(str(problem["field"]))} for problem in problems]
    # The first field, as the body names it; an unknown field's name is the caller's text, not shown.
    first = renamed[0] if renamed else {"field": "", "unknown": True}
    param = None if first.get("unknown") else str(first["field"]).partition(".")[2] or None
    # The code POST /v1/chat/completions answers with (handler/openai_api.error_body).
    return Fault(
        describe_problems(renamed, with_values=False), InvalidRequest.error_type, HTTPStatus.BAD_REQUEST, param
    )
