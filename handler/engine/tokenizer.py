"""A model's tokenizer: prompts built safely, counted and cut against the context window, tokens read back.

Prompts are the chat template rendered around message content that never becomes control tokens. Message
content is tokenized as plain text, so special-token text a user writes stays text; only the
template's own text is searched for special tokens, with llama.cpp's whitespace strip rules beside them.
"""

from __future__ import annotations

import ctypes
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from handler.core.errors import GenerationError, InputTooLong, InvalidRequest, ModelLoadError
from handler.domain.requests import ResponseFormat
from handler.engine.grammar import grammar_sampler
from handler.formats.json_output import grammar
from handler.formats.prompts import Message

if TYPE_CHECKING:
    from llama_cpp import Llama

# C's isspace(), which llama.cpp uses when a special token strips the whitespace beside it.
_C_WHITESPACE = " \t\n\v\f\r"


@dataclass(frozen=True)
class PromptTokens:
    """A prompt as token ids, with the token ranges that hold message content (data, never control)."""

    tokens: list[int]
    data_spans: list[tuple[int, int]]


@dataclass(frozen=True)
class _Special:
    id: int
    lstrip: bool
    rstrip: bool


@dataclass
class _Text:
    text: str
    is_data: bool


class Tokenizer:
    """A model's chat template and vocabulary: prompts built from messages, counted and cut, and tokens turned
    back into text.

    It reads a loaded model or its vocabulary alone (llama.cpp's vocab-only load, tens of milliseconds): prompts
    are counted exactly, so a request is checked against the context window before anything is promised for it,
    without loading the weights.
    """

    def __init__(self, llama: Llama, lib: Any, file_name: str, n_ctx: int) -> None:
        self._llama = llama
        self._lib = lib
        #: The context window a prompt and its output must fit.
        self.n_ctx = n_ctx
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelLoadError(f"model {file_name} has no tokenizer.chat_template in its GGUF metadata")
        self._template = _compile_template(template)
        #: llama.cpp's vocabulary handle, which its samplers and token functions take.
        self.vocab = llama._model.vocab
        self.n_vocab: int = lib.llama_vocab_n_tokens(self.vocab)
        self._specials, self.eog_ids = self._read_vocabulary()
        #: The texts of the end-of-generation tokens: stop strings of every generation with this model.
        self.eog_texts = tuple(sorted({self._token_text(token) for token in self.eog_ids} - {""}))
        self._special_ids = {special.id for special in self._specials.values()}
        self._special_pattern = re.compile(
            "|".join(re.escape(text) for text in sorted(self._specials, key=len, reverse=True))
        )
        #: The beginning-of-sequence token (negative when the model has none).
        self.bos: int = lib.llama_vocab_bos(self.vocab)
        self._add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab)) and self.bos >= 0
        self._piece_buffer = ctypes.create_string_buffer(64)

    def _read_vocabulary(self) -> tuple[dict[str, _Special], frozenset[int]]:
        """In one pass over the vocabulary: the tokens llama.cpp matches in text when it parses special
        tokens (with their strip rules), and the end-of-generation tokens."""
        lib = self._lib
        matched = lib.LLAMA_TOKEN_ATTR_CONTROL | lib.LLAMA_TOKEN_ATTR_USER_DEFINED | lib.LLAMA_TOKEN_ATTR_UNKNOWN
        specials = {}
        eog_ids = set()
        for token in range(self.n_vocab):
            if lib.llama_vocab_is_eog(self.vocab, token):
                eog_ids.add(token)
            attr = lib.llama_vocab_get_attr(self.vocab, token)
            if attr & matched:
                text = lib.llama_vocab_get_text(self.vocab, token).decode("utf-8", errors="replace")
                if text:
                    specials[text] = _Special(
                        token,
                        lstrip=bool(attr & lib.LLAMA_TOKEN_ATTR_LSTRIP),
                        rstrip=bool(attr & lib.LLAMA_TOKEN_ATTR_RSTRIP),
                    )
        return specials, frozenset(eog_ids)

    def render(self, messages: Sequence[Message]) -> str:
        """The chat template rendered as one string, as llama-cpp-python's chat path does (reference only)."""
        return self._template.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=self._token_text(self.bos),
            eos_token=self._token_text(self._lib.llama_vocab_eos(self.vocab)),
        )

    def build_prompt(self, messages: Sequence[Message]) -> PromptTokens:
        """Prompt tokens from the model's chat template, with message content tokenized as plain text.

        The template is rendered with a random placeholder for each content; only the template's own
        text is searched for special tokens. The result equals what llama.cpp gives for the whole
        rendered string whenever the content holds no special-token text, and content that does
        stays text.
        """
        nonce = secrets.token_hex(8)
        placeholders = [f"\ue000{nonce}:{index}\ue001" for index in range(len(messages))]
        rendered = self._template.render(
            messages=[{"role": m.role, "content": p} for m, p in zip(messages, placeholders, strict=True)],
            add_generation_prompt=True,
            bos_token=self._token_text(self.bos),
            eos_token=self._token_text(self._lib.llama_vocab_eos(self.vocab)),
        )
        pieces = re.split(f"\ue000{nonce}:(\\d+)\ue001", rendered)
        items: list[_Special | _Text] = []
        seen = []
        for position, piece in enumerate(pieces):
            if position % 2:
                index = int(piece)
                seen.append(index)
                items.append(_Text(messages[index].content, is_data=True))
            else:
                items.extend(self._split_specials(piece))
        if sorted(seen) != list(range(len(messages))):
            raise GenerationError("the model's chat template dropped or repeated a message; it cannot be used safely")
        _apply_strip_rules(items)
        return self._tokenize_items(items)

    def _split_specials(self, template_text: str) -> list[_Special | _Text]:
        items: list[_Special | _Text] = []
        position = 0
        for match in self._special_pattern.finditer(template_text) if self._specials else ():
            items.append(_Text(template_text[position : match.start()], is_data=False))
            items.append(self._specials[match.group()])
            position = match.end()
        items.append(_Text(template_text[position:], is_data=False))
        return items

    def _tokenize_items(self, items: list[_Special | _Text]) -> PromptTokens:
        tokens: list[int] = []
        data_spans: list[tuple[int, int]] = []
        if self._add_bos and not (items and isinstance(items[0], _Special) and items[0].id == self.bos):
            tokens.append(self.bos)
        run: list[_Text] = []

        def flush() -> None:
            # Adjacent template text and content form one raw fragment, as in the whole rendered string.
            text = "".join(part.text for part in run)
            if text:
                start = len(tokens)
                tokens.extend(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))
                if any(part.is_data and part.text for part in run):
                    data_spans.append((start, len(tokens)))
                    reserved = self._special_ids.intersection(tokens[start:])
                    if reserved:
                        names = sorted(self._token_text(token) for token in reserved)
                        raise InvalidRequest(
                            f"text contains {names}, which this model reserves even in plain text; remove it"
                        )
            run.clear()

        for item in items:
            if isinstance(item, _Text):
                run.append(item)
            else:
                flush()
                tokens.append(item.id)
        flush()
        return PromptTokens(tokens, data_spans)

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self._lib.llama_vocab_get_text(self.vocab, token).decode("utf-8", errors="replace"))

    def piece(self, token: int) -> bytes:
        """The token's text as bytes (control tokens render as nothing)."""
        length = self._lib.llama_token_to_piece(
            self.vocab, token, self._piece_buffer, len(self._piece_buffer), 0, False
        )
        if length < 0:  # the buffer is too small: llama.cpp says how big it must be
            self._piece_buffer = ctypes.create_string_buffer(-length)
            length = self._lib.llama_token_to_piece(self.vocab, token, self._piece_buffer, -length, 0, False)
        return self._piece_buffer.raw[:length]

    def is_special(self, token: int) -> bool:
        """Whether the token is a control (or reserved) token rather than text."""
        return token in self._special_ids

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is as message content (plain text, no special tokens)."""
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def cut_tokens(self, text: str, limit: int) -> list[str]:
        """``text`` cut, between characters, into runs of at most ``limit`` tokens (a run with no boundary)."""
        runs: list[str] = []
        while text:
            if self.count_tokens(text) <= limit:
                runs.append(text)
                break
            low, high = 1, len(text)  # the longest prefix within the limit, by bisection
            while low < high:
                middle = (low + high + 1) // 2
                if self.count_tokens(text[:middle]) <= limit:
                    low = middle
                else:
                    high = middle - 1
            runs.append(text[:low])
            text = text[low:]
        return runs

    def check_fits(self, prompt: PromptTokens, max_tokens: int) -> None:
        """Refuse, before any evaluation, a prompt that cannot be answered within the context window."""
        needed = len(prompt.tokens) + max_tokens
        if needed > self.n_ctx:
            raise InputTooLong(
                f"input is {len(prompt.tokens)} tokens and max_tokens is {max_tokens}: {needed} tokens do not fit "
                f"the context window of {self.n_ctx}; shorten the text by at least {needed - self.n_ctx} tokens "
                "or lower options.max_tokens",
                prompt_tokens=len(prompt.tokens),
                max_tokens=max_tokens,
                context_window=self.n_ctx,
            )

    def check_response_format(self, response_format: ResponseFormat | None) -> None:
        """Refuse a response format whose grammar llama.cpp's own parser would refuse at generation."""
        rules = grammar(response_format)
        if rules is None:
            return
        sampler = grammar_sampler(self._lib, self.vocab, rules)
        if sampler is None:
            problem = (
                "llama.cpp's grammar parser refuses the grammar made from this schema (a pattern construct it "
                "cannot parse); simplify the schema's patterns"
            )
            raise InvalidRequest(
                f"options.response_format.json_schema: {problem}",
                fields=[{"field": "options.response_format.json_schema", "problem": problem}],
            )
        self._lib.llama_sampler_free(sampler)


def _compile_template(source: str) -> jinja2.Template:
    # The same sandboxed environment that Hugging Face and llama-cpp-python render chat templates in.
    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    try:
        return environment.from_string(source)
    except jinja2.TemplateError as exc:
        raise ModelLoadError(f"the model's chat template does not compile: {exc}") from exc


def _apply_strip_rules(items: list[_Special | _Text]) -> None:
    """Strip whitespace beside special tokens marked lstrip/rstrip, as llama.cpp's tokenizer does."""
    for index, item in enumerate(items):
        if not isinstance(item, _Special):
            continue
        if item.rstrip:
            for following in items[index + 1 :]:
                if not isinstance(following, _Text):
                    break
                following.text = following.text.lstrip(_C_WHITESPACE)
                if following.text:
                    break
        if item.lstrip:
            for preceding in reversed(items[:index]):
                if not isinstance(preceding, _Text):
                    break
                preceding.text = preceding.text.rstrip(_C_WHITESPACE)
                if preceding.text:
                    break
