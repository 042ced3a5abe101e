"""What a request is: the three tasks, their options and response formats, their limits, and the parser that
makes a typed request of a direct-invoke event, an API body or a batch line (errors name every bad field)."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from handler.core.errors import InvalidRequest, describe_problems, field_problems
from handler.domain.item_limits import DYNAMODB_SMALLEST_MAGNITUDE, MAX_ITEM_BYTES, MAX_STORED_REQUEST_BYTES
from handler.domain.json_schema import check_schema

DEFAULT_MAX_TOKENS = 512
#: Why a request that asks for nothing to be written cannot be queued.
NOT_QUEUEABLE = (
    "store: false writes nothing, but a queued request is stored until it is done; "
    "send store: true to queue it, or ask for a synchronous answer"
)
MAX_TOKENS_LIMIT = 4096
MAX_TEXT_CHARS = 100_000
#: The longest text to summarize or translate, in characters and in the model's tokens (documents are cut into
#: chunks; beyond this, one invocation's 15 minutes cannot read them).
MAX_DOCUMENT_CHARS = 300_000
MAX_DOCUMENT_TOKENS = 80_000
MAX_MESSAGES = 64


#: A language is named in a few words ("Brazilian Portuguese", "Chinese (Traditional)"), not a sentence.
MAX_LANGUAGE_WORDS = 4


def _not_blank(value: str) -> str:
    """Text must show something: a letter, digit, punctuation mark or symbol, not only whitespace or
    invisible characters (zero-width spaces and joiners, direction marks, controls, lone combining marks)."""
    if not any(unicodedata.category(char)[0] in "LNPS" for char in value):
        raise ValueError("must not be empty or only whitespace")
    return value


def _a_language_name(value: str) -> str:
    if len(value.split()) > MAX_LANGUAGE_WORDS:
        raise ValueError(f"must name a language in at most {MAX_LANGUAGE_WORDS} words")
    return value


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_not_blank)]
#: A text to summarize or translate, which may be longer than the context window (handler/usecases/documents.py).
Document = Annotated[str, Field(min_length=1, max_length=MAX_DOCUMENT_CHARS), AfterValidator(_not_blank)]
#: How a text longer than the context window is handled: ``single`` refuses it (InputTooLong), ``map_reduce``
#: always cuts it into chunks, ``auto`` cuts only a text that does not fit.
Strategy = Literal["auto", "single", "map_reduce"]


def _canonical_number(value: Any) -> Any:
    """One value per number before validation and before the request id: -0.0 is 0.0, and a magnitude the
    results table cannot hold is 0, so the id, the check and the stored item all see the same number."""
    if isinstance(value, float) and abs(value) < DYNAMODB_SMALLEST_MAGNITUDE:
        return 0.0
    return value


#: A float option: canonical before its limits are checked.
Number = Annotated[float, BeforeValidator(_canonical_number)]


class _Strict(BaseModel):
    # Strict: a number given as a string or a string given as a list is a type error, not a guess.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class JsonSchemaFormat(_Strict):
    """A JSON schema the output must validate against (OpenAI's ``response_format.json_schema``)."""

    name: str = Field("output", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = Field(None, max_length=1000)
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON schema (a subset: see docs/requests.md).")
    strict: bool | None = Field(None, description="Accepted for compatibility: the output always follows the schema.")

    @model_validator(mode="after")
    def _convertible(self) -> JsonSchemaFormat:
        # The grammar converter is tried when the request is checked, so a schema it cannot take is refused at once.
        check_schema(self.schema_)
        return self


class ResponseFormat(_Strict):
    """Constrain the output: ``text`` (free), ``json_object`` (any JSON object) or ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type json_schema, and only with it")
        return self


class GenerationOptions(_Strict):
    """How to generate: defaults suit pre-generation (greedy, bounded).

    Generation always stops at the model's own end-of-generation tokens, also when the model spells
    one in ordinary text pieces (the engine reads them from the loaded model); ``stop`` adds more.
    """

    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=MAX_TOKENS_LIMIT, description="Most tokens to generate.")
    temperature: Number = Field(0.0, ge=0.0, le=2.0, description="0 is greedy decoding.")
    top_p: Number = Field(1.0, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    repeat_penalty: Number = Field(1.0, ge=0.5, le=2.0)
    stop: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list,
        max_length=8,
        description="More stop strings; the model's end-of-generation tokens always stop, as tokens or as text.",
    )
    store: bool = Field(True, description="Store the result in the table (false: answer only).")
    response_format: ResponseFormat | None = Field(
        None,
        description="JSON output: generation is constrained by a grammar made from the schema (llama.cpp's "
        "converter), and the output is validated against it before it is answered or stored.",
    )


class _Request(_Strict):
    options: GenerationOptions = GenerationOptions()
    mode: Literal["sync", "async"] = Field(
        "sync", description="async: queue the request and answer at once with its id (API: 202)."
    )

    @model_validator(mode="after")
    def _storable(self) -> _Request:
        # A request to be stored is checked before anything is promised: its item must hold it and its result.
        if self.options.store:
            size = len(self.model_dump_json().encode("utf-8"))
            if size > MAX_STORED_REQUEST_BYTES:
                raise ValueError(
                    f"the request takes {size} bytes as stored, over the {MAX_STORED_REQUEST_BYTES} a stored request "
                    f"may take (DynamoDB's {MAX_ITEM_BYTES // 1024} KB item, with room for the result); "
                    "send less text, or options.store false for an answer that is not stored"
                )
        return self

    def identity(self) -> dict[str, Any]:
        """What makes two requests the same request: everything but how and whether it is answered.

        Free text (no ``response_format``, or ``type: text``) is the identity requests had before the
        option existed, so their stored results keep their ids.
        """
        excluded: set[str] = {"store"}
        if self.options.response_format is None or self.options.response_format.type == "text":
            excluded.add("response_format")
        return self.model_dump(mode="json", by_alias=True, exclude={"mode": True, "options": excluded})


class SummarizeRequest(_Request):
    """Summarize a text as bullet points (the first seed's use) or as one paragraph."""

    task: Literal["summarize"]
    text: Document
    style: Literal["bullets", "paragraph"] = "bullets"
    strategy: Strategy = Field(
        "auto", description="A text longer than the context window: auto/map_reduce summarize its chunks, then those."
    )


class TranslateRequest(_Request):
    """Translate a text into a language named in words."""

    task: Literal["translate"]
    text: Document
    strategy: Strategy = Field(
        "auto", description="A text longer than the context window: auto/map_reduce translate it chunk by chunk."
    )
    target_language: Annotated[
        str,
        Field(min_length=1, max_length=64, pattern=r"^[^\W\d_](?:[^\W\d_]|[ \-'(),.])*$"),
        AfterValidator(_not_blank),
        AfterValidator(_a_language_name),
    ] = "Japanese"


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: Text


class ChatRequest(_Request):
    """Answer a conversation (the second seed's use: a system prompt and a question)."""

    task: Literal["chat"]
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)

    @model_validator(mode="after")
    def _has_user_turn(self) -> ChatRequest:
        if not any(message.role == "user" for message in self.messages):
            raise ValueError("messages must contain at least one message with role 'user'")
        return self


#: Any request; its ``task`` says which.
TextRequest = SummarizeRequest | TranslateRequest | ChatRequest
TASKS = ("summarize", "translate", "chat")
request_adapter: TypeAdapter[TextRequest] = TypeAdapter(Annotated[TextRequest, Field(discriminator="task")])


def parse_request(event: Any) -> TextRequest:
    """A typed request from a direct-invoke event or API body; errors name every bad field."""
    if not isinstance(event, dict):
        raise InvalidRequest(f"event must be a JSON object, got {type(event).__name__}")
    try:
        return request_adapter.validate_python(event)
    except ValidationError as exc:
        problems = field_problems(exc.errors(include_url=False), TASKS)
        raise InvalidRequest(describe_problems(problems), fields=problems) from exc
