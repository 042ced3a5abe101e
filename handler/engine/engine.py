"""The Engine: one loaded model and the parts through which the service talks to llama.cpp.

The engine holds its parts and hands each the little it shares with the others: the loaded model
(``loaded_model``: llama.cpp's handles and the lock), the tokenizer that builds and counts prompts
(``tokenizer``), the decoder of one request at a time with prompt-lookup drafting (``decoder``) and the
batch decoder (``batch_decoder``). Its methods are what the service calls; each is the part's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from handler.domain.answers import ModelInfo
from handler.domain.requests import GenerationOptions, ResponseFormat
from handler.engine.batch_decoder import BatchDecoder
from handler.engine.completion import Completion
from handler.engine.decoder import Decoder
from handler.engine.gguf import quantization_name
from handler.engine.identity import ModelIdentity
from handler.engine.loaded_model import LoadedModel
from handler.engine.output_text import TextSink
from handler.engine.tokenizer import PromptTokens, Tokenizer
from handler.formats.prompts import Message


class Engine:
    """One loaded model and the only way the service talks to llama.cpp."""

    def __init__(
        self,
        model: LoadedModel,
        identity: ModelIdentity,
        parallel: int = 1,
        batch_n_ctx: int | None = None,
        spec_draft_max: int = 0,
    ) -> None:
        self.model = model
        self.identity = identity
        self.tokenizer = Tokenizer(model.llama, model.lib, identity.file, model.n_ctx)
        self.decoder = Decoder(model, self.tokenizer, spec_draft_max)
        self.batch_decoder = BatchDecoder(model, self.tokenizer, parallel, batch_n_ctx)
        #: Milliseconds from the start of loading to a warmed-up engine (set when loading ends).
        self.load_ms = 0.0
        self.info = ModelInfo(
            file=identity.file,
            sha256=identity.sha256,
            quantization=quantization_name(model.lib, model.llama.metadata.get("general.file_type")),
            context_length=model.n_ctx,
        )

    @property
    def n_ctx(self) -> int:
        """The context window a prompt and its output must fit."""
        return self.model.n_ctx

    @property
    def n_threads(self) -> int:
        return self.model.n_threads

    @property
    def parallel(self) -> int:
        """Requests decoded together by ``generate_batch``."""
        return self.batch_decoder.parallel

    @property
    def measured_prompt_tokens_per_s(self) -> float | None:
        """Prompt speed measured on this machine by the last representative request (None before one)."""
        return self.decoder.measured_prompt_tokens_per_s

    @property
    def measured_eval_tokens_per_s(self) -> float | None:
        """Decode steps per second measured on this machine by the last representative request."""
        return self.decoder.measured_eval_tokens_per_s

    def build_prompt(self, messages: Sequence[Message]) -> PromptTokens:
        return self.tokenizer.build_prompt(messages)

    def count_tokens(self, text: str) -> int:
        return self.tokenizer.count_tokens(text)

    def cut_tokens(self, text: str, limit: int) -> list[str]:
        return self.tokenizer.cut_tokens(text, limit)

    def check_fits(self, prompt: PromptTokens, max_tokens: int) -> None:
        self.tokenizer.check_fits(prompt, max_tokens)

    def check_response_format(self, response_format: ResponseFormat | None) -> None:
        self.tokenizer.check_response_format(response_format)

    def warm_up(self) -> None:
        self.decoder.warm_up()

    def clear_cache(self) -> None:
        self.decoder.clear_cache()

    def generate(
        self,
        prompt: PromptTokens,
        options: GenerationOptions,
        deadline: float | None = None,
        ignore_eos: bool = False,
        sink: TextSink | None = None,
        draft_max: int | None = None,
    ) -> Completion:
        return self.decoder.generate(prompt, options, deadline, ignore_eos, sink, draft_max)

    def unified_for(self, jobs: Sequence[tuple[PromptTokens, GenerationOptions]]) -> bool:
        return self.batch_decoder.unified_for(jobs)

    def generate_batch(
        self,
        jobs: Sequence[tuple[PromptTokens, GenerationOptions]],
        deadline: float | None = None,
        ignore_eos: bool = False,
        share_prefixes: bool = True,
        unified: bool | None = None,
    ) -> list[Completion | None]:
        return self.batch_decoder.generate_batch(jobs, deadline, ignore_eos, share_prefixes, unified)
