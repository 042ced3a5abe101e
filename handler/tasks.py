"""How each task becomes chat messages for the model's own chat template.

The fixed instruction comes first and the caller's text last, so requests of one kind share a
prompt prefix that llama.cpp can reuse from its KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from handler.schemas import ChatRequest, SummarizeRequest, TranslateRequest

#: Part of every result id: change it whenever a prompt below changes, so old results are not served.
PROMPT_VERSION = "2026-11-21"

Role = Literal["system", "user", "assistant"]

SUMMARIZE_INSTRUCTIONS = {
    # The first seed's wording, which gave good bullet summaries with Phi-3-mini.
    "bullets": "Summarize the following sentences with bullet points:\n\n",
    "paragraph": "Summarize the following sentences in one short paragraph:\n\n",
}
TRANSLATE_INSTRUCTION = "Translate the following text to {language}. Answer with the translation only.\n\n"


@dataclass(frozen=True)
class Message:
    """One chat turn; ``content`` is always data and never parsed for control tokens."""

    role: Role
    content: str


def build_messages(request: SummarizeRequest | TranslateRequest | ChatRequest) -> list[Message]:
    """The conversation that asks the model to perform the request's task."""
    match request:
        case SummarizeRequest():
            return [Message("user", SUMMARIZE_INSTRUCTIONS[request.style] + request.text)]
        case TranslateRequest():
            instruction = TRANSLATE_INSTRUCTION.format(language=request.target_language.strip())
            return [Message("user", instruction + request.text)]
        case ChatRequest():
            return [Message(message.role, message.content) for message in request.messages]
