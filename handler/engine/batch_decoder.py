"""Batched decoding: several requests as sequences of one llama.cpp context, scheduled into its slots."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from handler.core.errors import GenerationError
from handler.domain.requests import GenerationOptions
from handler.engine.completion import Completion
from handler.engine.loaded_model import LoadedModel, put_token
from handler.engine.output_text import OutputText
from handler.engine.sampling import sampler_chain
from handler.engine.tokenizer import PromptTokens, Tokenizer


@dataclass
class _Slot:
    """A request being decoded in the batch context, as one llama.cpp sequence."""

    index: int
    seq: int
    prompt: PromptTokens
    output: OutputText
    sampler: Any
    reserved: int
    position: int = 0
    #: Prompt tokens this sequence evaluated itself (the others it shares with another's cells).
    prompt_eval_tokens: int = 0
    next_token: int = -1
    prompt_ms: float = 0.0
    eval_ms: float = 0.0
    eval_runs: int = 0
    started: float = 0.0


#: Prompts sharing fewer tokens than this are decoded in a KV cache split by sequence (no shared cells).
MIN_SHARED_PREFIX_TOKENS = 128


class BatchDecoder:
    """Several requests at once, as sequences of a context of their own (created on first use), scheduled into
    its ``parallel`` slots."""

    def __init__(self, model: LoadedModel, tokenizer: Tokenizer, parallel: int, n_ctx: int | None) -> None:
        self._model = model
        self._lib = model.lib
        self._tokenizer = tokenizer
        #: Requests decoded together, and the KV cache size they share (never below the main context's).
        self.parallel = parallel
        self.n_ctx = max(n_ctx or model.n_ctx, model.n_ctx)
        self._context: tuple[Any, Any] | None = None
        #: Whether the batch context's KV cache is unified (sequences may share cells) or split by sequence.
        self.unified = True

    def unified_for(self, jobs: Sequence[tuple[PromptTokens, GenerationOptions]]) -> bool:
        """Whether these requests are decoded in one unified KV cache (some share a prefix worth sharing, or one
        does not fit a sequence's part of a split cache) or in one split by sequence.

        In a unified cache every token attends over the cells of all sequences, masked; prompts that share
        nothing gain nothing from it and pay that attention: measured, a long text's four chunks took 232 s in a
        unified cache against 189 s split by sequence (Phi-3-shaped model, 2 cores).
        """
        per_sequence = self.n_ctx // max(self.parallel, 1)
        if any(len(prompt.tokens) + options.max_tokens > per_sequence for prompt, options in jobs):
            return True
        # A prompt's last token is never shared (its logits start the sequence), hence the strict ">".
        prefixes = [
            tuple(prompt.tokens[:MIN_SHARED_PREFIX_TOKENS])
            for prompt, _ in jobs
            if len(prompt.tokens) > MIN_SHARED_PREFIX_TOKENS
        ]
        return len(set(prefixes)) < len(prefixes)

    def generate_batch(
        self,
        jobs: Sequence[tuple[PromptTokens, GenerationOptions]],
        deadline: float | None = None,
        ignore_eos: bool = False,
        share_prefixes: bool = True,
        unified: bool | None = None,
    ) -> list[Completion | None]:
        """Generate several requests together: each decode step reads the weights once for all of them.

        A request whose prompt begins as an active one's does (requests over one text, text first) shares
        that prefix's KV cells instead of evaluating it again (``share_prefixes``, on unless measured against).

        Up to ``parallel`` requests are decoded as llama.cpp sequences of one context, each with its own
        sampler, stops and ``max_tokens``; a finished request frees its slot for the next one. Decode is
        memory bound, so the step costs about what one sequence's step costs. Requests still waiting or
        unfinished when the deadline passes come back as None (nothing partial is returned).

        The KV cache is unified when the requests share a prefix (``unified_for``; ``unified`` decides instead
        when given), else split by sequence, so that each token attends over its own sequence's cells only.
        """
        for prompt, options in jobs:
            self._tokenizer.check_fits(prompt, options.max_tokens)
        if unified is None:
            unified = self.unified_for(jobs)
        share_prefixes = share_prefixes and unified  # cells are shared only within one unified cache
        results: list[Completion | None] = [None] * len(jobs)
        with self._model.lock:
            context, batch = self.context(unified)
            memory = self._lib.llama_get_memory(context)
            self._lib.llama_memory_clear(memory, True)
            waiting = deque(enumerate(jobs))
            active: list[_Slot] = []
            free = list(range(self.parallel - 1, -1, -1))
            reserved = 0
            try:
                while waiting or active:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    # Admit requests while a sequence is free and their tokens fit the shared KV cache.
                    while waiting and free:
                        index, (prompt, options) = waiting[0]
                        source, shared = _longest_shared_prefix(active, prompt) if share_prefixes else (None, 0)
                        # Shared cells are the source's: only the rest of the prompt and the output are new.
                        need = len(prompt.tokens) - shared + options.max_tokens
                        if active and reserved + need > self.n_ctx:
                            break
                        waiting.popleft()
                        slot = _Slot(
                            index,
                            free.pop(),
                            prompt,
                            OutputText(options, self._tokenizer.eog_ids, self._tokenizer.eog_texts, ignore_eos),
                            sampler_chain(self._lib, self._tokenizer, options, ignore_eos),
                            need,
                        )
                        reserved += need
                        slot.started = time.perf_counter()
                        if source is not None:
                            # The unified KV cache lets sequences share cells: the prefix is evaluated once.
                            self._lib.llama_memory_seq_cp(memory, source.seq, slot.seq, 0, shared)
                        self._prefill(context, batch, slot, start=shared)
                        slot.prompt_ms = (time.perf_counter() - slot.started) * 1000.0
                        first = self._lib.llama_sampler_sample(slot.sampler, context, -1)
                        if slot.output.accept(first, self._tokenizer.piece):
                            results[index] = self._finish(slot, memory, free)
                            reserved -= slot.reserved
                        else:
                            slot.next_token = first
                            active.append(slot)
                    if not active:
                        continue
                    # One step: the next token of every active request in one llama_decode.
                    for i, slot in enumerate(active):
                        put_token(batch, i, slot.next_token, slot.position, slot.seq, True)
                    batch.n_tokens = len(active)
                    step_started = time.perf_counter()
                    self._decode(context, batch)
                    step_ms = (time.perf_counter() - step_started) * 1000.0
                    still: list[_Slot] = []
                    for i, slot in enumerate(active):
                        slot.position += 1
                        slot.eval_ms += step_ms
                        slot.eval_runs += 1
                        token = self._lib.llama_sampler_sample(slot.sampler, context, i)
                        if slot.output.accept(token, self._tokenizer.piece):
                            results[slot.index] = self._finish(slot, memory, free)
                            reserved -= slot.reserved
                        else:
                            slot.next_token = token
                            still.append(slot)
                    active = still
            finally:
                for slot in active:
                    self._lib.llama_sampler_free(slot.sampler)
                self._lib.llama_memory_clear(memory, True)
        return results

    def context(self, unified: bool | None = None) -> tuple[Any, Any]:
        """The context for batched generation and its llama_batch, created on first use, with its KV cache
        unified (the sequences can share cells) or split by sequence; None takes the one there is. One exists
        at a time, so the KV cache's memory is that of one (``BATCH_N_CTX`` tokens) either way."""
        if self._context is not None and unified is not None and unified != self.unified:
            old_context, old_batch = self._context
            self._lib.llama_batch_free(old_batch)
            self._lib.llama_free(old_context)
            self._context = None
        if self._context is None:
            lib = self._lib
            params = type(self._model.llama.context_params).from_buffer_copy(self._model.llama.context_params)
            params.n_ctx = self.n_ctx
            params.n_seq_max = self.parallel
            params.kv_unified = True if unified is None else unified
            self.unified = bool(params.kv_unified)
            context = lib.llama_init_from_model(self._model.llama._model.model, params)
            if not context:
                raise GenerationError(
                    f"llama.cpp could not create a batch context of {self.n_ctx} tokens for "
                    f"{self.parallel} sequences; lower BATCH_N_CTX or BATCH_PARALLEL"
                )
            self._context = (context, lib.llama_batch_init(max(self._model.n_batch, self.parallel), 0, 1))
        return self._context

    def _decode(self, context: Any, batch: Any) -> None:
        status = self._lib.llama_decode(context, batch)
        if status != 0:
            raise GenerationError(f"llama_decode failed with status {status} on a batch of {batch.n_tokens} tokens")

    def _prefill(self, context: Any, batch: Any, slot: _Slot, start: int = 0) -> None:
        """Evaluate a request's prompt from ``start`` (what comes before is shared) in its own sequence,
        keeping the last token's logits."""
        tokens = slot.prompt.tokens
        for first in range(start, len(tokens), self._model.n_batch):
            chunk = tokens[first : first + self._model.n_batch]
            for i, token in enumerate(chunk):
                put_token(batch, i, token, first + i, slot.seq, first + i == len(tokens) - 1)
            batch.n_tokens = len(chunk)
            self._decode(context, batch)
        slot.position = len(tokens)
        slot.prompt_eval_tokens = len(tokens) - start

    def _finish(self, slot: _Slot, memory: Any, free: list[int]) -> Completion:
        self._lib.llama_sampler_free(slot.sampler)
        self._lib.llama_memory_seq_rm(memory, slot.seq, -1, -1)
        free.append(slot.seq)
        return Completion(
            text=slot.output.text,
            finish_reason=slot.output.finish_reason or "length",
            prompt_tokens=len(slot.prompt.tokens),
            prompt_eval_tokens=slot.prompt_eval_tokens,
            prompt_ms=round(slot.prompt_ms, 3),
            completion_tokens=slot.output.generated,
            eval_runs=slot.eval_runs,
            eval_ms=round(slot.eval_ms, 3),
            total_ms=round((time.perf_counter() - slot.started) * 1000.0, 3),
        )


def _longest_shared_prefix(active: list[_Slot], prompt: PromptTokens) -> tuple[_Slot | None, int]:
    """The active sequence whose prompt shares the longest prefix with ``prompt``, and that prefix's length.

    The active sequences still hold their prompts' cells. The prompt's last token is never shared: its
    logits start the new sequence's decoding.
    """
    best: _Slot | None = None
    longest = 0
    limit = len(prompt.tokens) - 1
    for slot in active:
        shared = 0
        for mine, theirs in zip(prompt.tokens[:limit], slot.prompt.tokens, strict=False):
            if mine != theirs:
                break
            shared += 1
        if shared > longest:
            best, longest = slot, shared
    return best, longest
