"""JSON output: the grammar generation follows for a response format, and the check of the output after it.

The output is validated again after generation: an output cut off by ``max_tokens`` is not valid JSON, and
it is reported, never stored as DONE.
"""

from __future__ import annotations

import json

import jsonschema

from handler.core.errors import OutputInvalid
from handler.domain.json_schema import grammar_module, schema_grammar
from handler.domain.requests import ResponseFormat


def grammar(response_format: ResponseFormat | None) -> str | None:
    """The GBNF grammar generation follows for this response format; None for free text."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.json_schema is None:
        return str(grammar_module().JSON_GBNF)
    return schema_grammar(json.dumps(response_format.json_schema.schema_))


def check_output(text: str, response_format: ResponseFormat | None, finish_reason: str) -> None:
    """Refuse an output that is not the JSON the response format asks for (it is neither answered nor stored)."""
    if response_format is None or response_format.type == "text":
        return
    cut = " (generation stopped at max_tokens: raise options.max_tokens)" if finish_reason == "length" else ""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputInvalid(f"the output is not valid JSON: {exc.msg} at column {exc.colno}{cut}") from None
    if response_format.json_schema is None:
        if not isinstance(value, dict):
            raise OutputInvalid(f"the output is JSON but not an object{cut}")
        return
    error = jsonschema.exceptions.best_match(
        jsonschema.validators.validator_for(response_format.json_schema.schema_)(
            response_format.json_schema.schema_
        ).iter_errors(value)
    )
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "the top"
        raise OutputInvalid(
            f"the output does not validate against the schema at {where}: {error.message}{cut}",
            log_message=f"the output does not validate against the schema (its {error.validator!s} rule){cut}",
        )
