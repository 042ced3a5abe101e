"""A request prepared: the one place that decides how a request is answered, and refuses it up front.

``prepare`` is called once per request, by whoever first needs it (the answer path, a queued item's claim):
a request whose prompt fits the context window is generated as it is, its prompt checked; a text that does not
(or one asked for ``strategy: map_reduce``) is a document, answered through its chunks' requests
(handler/usecases/documents.py), cut here. Either is refused, before anything is promised or written, when it
cannot be answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from handler.core.errors import InputTooLong
from handler.domain.requests import MAX_DOCUMENT_TOKENS, SummarizeRequest, TextRequest, TranslateRequest
from handler.engine import Engine, PromptTokens, Tokenizer
from handler.formats.prompts import build_messages
from handler.usecases.chunking import chunks

#: Chunk size in tokens, as LangChain's and LlamaIndex's map-reduce users usually choose it.
CHUNK_TOKENS = 1000
#: The most of a chunk's last sentence repeated at the next chunk's start.
OVERLAP_TOKENS = 48
#: Room for the instruction and the chat template around a chunk.
PROMPT_ROOM_TOKENS = 96

#: What builds and counts prompts: the loaded engine, or the model's vocabulary alone.
Counter = Engine | Tokenizer
#: The requests that can be answered as documents.
Document = SummarizeRequest | TranslateRequest


@dataclass(frozen=True)
class PreparedRequest:
    """How a request is answered: as one generation, or as a document through its chunks' requests."""

    document: bool
    #: The prompt's tokens (one generation), or the text's (a document: its chunks' prompts are about as many).
    prompt_tokens: int
    #: One generation's prompt, checked to fit (the vocabulary and the engine build the same tokens).
    prompt: PromptTokens | None = None


def prepare(counter: Counter, request: TextRequest) -> PreparedRequest:
    """Decide one request or a document, and refuse the request if it cannot be answered either way."""
    counter.check_response_format(request.options.response_format)
    prompt = None
    if isinstance(request, SummarizeRequest | TranslateRequest) and request.strategy != "single":
        if request.strategy == "auto":
            prompt = counter.build_prompt(build_messages(request))
        if prompt is None or len(prompt.tokens) + request.options.max_tokens > counter.n_ctx:
            return PreparedRequest(document=True, prompt_tokens=check_document(counter, request))
    prompt = prompt or counter.build_prompt(build_messages(request))
    counter.check_fits(prompt, request.options.max_tokens)
    return PreparedRequest(document=False, prompt_tokens=len(prompt.tokens), prompt=prompt)


def checked_prompt(counter: Counter, request: TextRequest) -> PromptTokens:
    """The request's prompt tokens, refused before any evaluation if they cannot fit the context."""
    prompt = counter.build_prompt(build_messages(request))
    counter.check_fits(prompt, request.options.max_tokens)
    return prompt


def fits_one_request(counter: Counter, request: Document) -> bool:
    """Whether a document's joined chunk answers fit one request (the reduce step) as they are."""
    prompt = counter.build_prompt(build_messages(request))
    return len(prompt.tokens) + request.options.max_tokens <= counter.n_ctx


def check_document(counter: Counter, request: Document) -> int:
    """The text's length in tokens, refused beyond the document limit or when no chunk can fit."""
    tokens = counter.count_tokens(request.text)
    if tokens > MAX_DOCUMENT_TOKENS:
        raise InputTooLong(
            f"the text is {tokens} tokens; a document may be at most {MAX_DOCUMENT_TOKENS} tokens "
            "(split it into several requests)",
            text_tokens=tokens,
            limit_tokens=MAX_DOCUMENT_TOKENS,
        )
    if chunk_limit(counter, request) < 64:
        raise InputTooLong(
            f"max_tokens {request.options.max_tokens} leaves no room for a chunk of text in the context window "
            f"of {counter.n_ctx}; lower options.max_tokens",
            max_tokens=request.options.max_tokens,
            context_window=counter.n_ctx,
        )
    return tokens


def chunk_limit(counter: Counter, request: Document) -> int:
    """The most tokens of text one chunk's request can hold."""
    return min(CHUNK_TOKENS, counter.n_ctx - request.options.max_tokens - PROMPT_ROOM_TOKENS)


def split(counter: Counter, request: Document, text: str) -> list[Document]:
    """The requests over ``text``'s chunks: the same task and options, one chunk each."""
    pieces = chunks(text, chunk_limit(counter, request), counter.count_tokens, counter.cut_tokens, OVERLAP_TOKENS)
    return [request.model_copy(update={"text": piece, "strategy": "single", "mode": "sync"}) for piece in pieces]
