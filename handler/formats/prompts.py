"""How each task becomes chat messages for the model's own chat template.

The caller's text comes first and the instruction last, so every request over one text (a summary as
bullets and as a paragraph, translations into several languages) shares the prompt up to the end of the
text: llama.cpp reuses it from the KV cache (one request after another) or evaluates it once for all of
them (batched decoding, handler/engine/batch_decoder.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from handler.domain.requests import ChatRequest, SummarizeRequest, TranslateRequest

#: Part of every result id: change it whenever a prompt below changes, so old results are not served.
PROMPT_VERSION = "2026-12-03"

Role = Literal["system", "user", "assistant"]

#: Between the text and the instruction: a blank line, as the instruction-first prompts had.
SEPARATOR = "\n\n"
SUMMARIZE_INSTRUCTIONS = {
    # The first seed's wording, which gave good bullet summaries with Phi-3-mini, pointed at the text above.
    "bullets": "Summarize the sentences above with bullet points.",
    "paragraph": "Summarize the sentences above in one short paragraph.",
}
TRANSLATE_INSTRUCTION = "Translate the text above to {language}. Answer with the translation only."


@dataclass(frozen=True)
class Message:
    """One chat turn; ``content`` is always data and never parsed for control tokens."""

    role: Role
    content: str


def build_messages(request: SummarizeRequest | TranslateRequest | ChatRequest) -> list[Message]:
    """The conversation that asks the model to perform the request's task."""
    match request:
        case SummarizeRequest():
            return [Message("user", request.text + SEPARATOR + SUMMARIZE_INSTRUCTIONS[request.style])]
        case TranslateRequest():
            instruction = TRANSLATE_INSTRUCTION.format(language=request.target_language.strip())
            return [Message("user", request.text + SEPARATOR + instruction)]
        case ChatRequest():
            return [Message(message.role, message.content) for message in request.messages]
