"""Single-request decoding in the model's main context: stops, the deadline, KV-prefix reuse, prompt-lookup
drafting and timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from handler.core.errors import DeadlineReached, GenerationError
from handler.domain.requests import GenerationOptions
from handler.engine.completion import Completion
from handler.engine.loaded_model import LoadedModel, put_token
from handler.engine.lookup import DraftLength, PromptLookup
from handler.engine.output_text import OutputText, TextSink
from handler.engine.sampling import sampler_chain
from handler.engine.tokenizer import PromptTokens, Tokenizer


def _evaluated(perf: Any) -> int:
    """Tokens llama.cpp's counters say were evaluated; they read a count of 0 as 1, a zero time tells which."""
    return (int(perf.n_p_eval) if perf.t_p_eval_ms > 0 else 0) + (int(perf.n_eval) if perf.t_eval_ms > 0 else 0)


@dataclass
class _Decoded:
    """What a decode loop made: the output text, its llama_decode steps and the drafted and kept tokens."""

    output: OutputText
    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    draft_steps: list[tuple[int, int]] = field(default_factory=list)


class Decoder:
    """One request at a time, as sequence 0 of the model's main context, whose KV cache keeps the last prompt
    for the next request to reuse."""

    def __init__(self, model: LoadedModel, tokenizer: Tokenizer, spec_draft_max: int) -> None:
        self._model = model
        self._lib = model.lib
        self._ctx = model.ctx
        self._tokenizer = tokenizer
        #: Most tokens drafted by prompt lookup per decode step (SPEC_DRAFT_MAX; 0: none).
        self.spec_draft_max = spec_draft_max
        #: The tokens whose cells the main context's KV cache holds, in order.
        self.kv_tokens: list[int] = []
        #: Speeds measured on this machine, for predicting whether a request fits a time budget.
        self.measured_prompt_tokens_per_s: float | None = None
        self.measured_eval_tokens_per_s: float | None = None
        self._draft_batch: tuple[int, Any] | None = None

    def warm_up(self) -> None:
        """Decode one token and forget it, so the first request does not pay llama.cpp's first-decode setup.

        The first llama_decode allocates the compute graph, starts the threads and touches the weights
        that are read from the mapped file: time that belongs to loading, not to a request's prompt.
        """
        with self._model.lock:
            token = self._tokenizer.bos if self._tokenizer.bos >= 0 else 0
            self._decode_tokens([token])
            # Decoding is asynchronous: wait for it, so its time is not booked to the first request.
            self._lib.llama_synchronize(self._ctx)
            self._lib.llama_perf_context_reset(self._ctx)
            self._clear_kv()

    def clear_cache(self) -> None:
        """Forget the prompt kept in the KV cache: the next request evaluates its whole prompt."""
        with self._model.lock:
            self._clear_kv()

    def _clear_kv(self) -> None:
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)
        self.kv_tokens = []

    def generate(
        self,
        prompt: PromptTokens,
        options: GenerationOptions,
        deadline: float | None = None,
        ignore_eos: bool = False,
        sink: TextSink | None = None,
        draft_max: int | None = None,
    ) -> Completion:
        """Generate until an end-of-generation token, a stop string, ``max_tokens`` or the deadline.

        ``deadline`` is a ``time.monotonic()`` value: a generation still running then ends with
        ``finish_reason="deadline"`` (or raises DeadlineReached while still reading the prompt).
        ``ignore_eos`` keeps generating past end-of-generation tokens (benchmarks on random weights).
        ``sink`` receives the text as it is made (a streamed answer); a generation cut by the deadline hands
        on no final piece.
        Sampling runs in llama.cpp's own sampler chain (``sampling``): no logits cross into Python.
        ``draft_max`` (default ``spec_draft_max``) bounds the tokens drafted per step by prompt lookup; greedy
        requests only (temperature 0), whose output drafting does not change (``_decode``).
        """
        self._tokenizer.check_fits(prompt, options.max_tokens)
        lib = self._lib
        if options.temperature != 0.0:
            draft_max = 0
        elif draft_max is None:
            draft_max = self.spec_draft_max
        with self._model.lock:
            lib.llama_perf_context_reset(self._ctx)
            started = time.perf_counter()
            sampler = sampler_chain(lib, self._tokenizer, options, ignore_eos)
            try:
                self.evaluate_prompt(prompt.tokens, deadline)
                # llama.cpp books a multi-token decode as prompt work: its counters are read once the prompt
                # is in, and the decode steps' share is what they add after that.
                lib.llama_synchronize(self._ctx)
                read = lib.llama_perf_context(self._ctx)
                prompt_evaluated, prompt_ms = _evaluated(read), read.t_p_eval_ms + read.t_eval_ms
                decoded = self._decode(sampler, options, deadline, ignore_eos, sink, prompt.tokens, draft_max)
            finally:
                lib.llama_sampler_free(sampler)
            total_ms = (time.perf_counter() - started) * 1000.0
            perf = lib.llama_perf_context(self._ctx)
        completion = Completion(
            text=decoded.output.text,
            finish_reason=decoded.output.finish_reason or "length",
            prompt_tokens=len(prompt.tokens),
            prompt_eval_tokens=prompt_evaluated,
            prompt_ms=round(prompt_ms, 3),
            completion_tokens=decoded.output.generated,
            eval_runs=decoded.steps,
            eval_ms=round(perf.t_p_eval_ms + perf.t_eval_ms - prompt_ms, 3),
            total_ms=round(total_ms, 3),
            drafted_tokens=decoded.drafted,
            accepted_tokens=decoded.accepted,
            draft_steps=tuple(decoded.draft_steps),
        )
        # Short runs time mostly overhead; only runs long enough to be representative update the estimate.
        if completion.prompt_eval_tokens >= 16:
            self.measured_prompt_tokens_per_s = completion.prompt_tokens_per_s
        if completion.eval_runs >= 8:
            # Steps, not tokens: what a request is predicted to take must not count on its text's drafts.
            self.measured_eval_tokens_per_s = completion.eval_steps_per_s
        return completion

    def evaluate_prompt(self, tokens: list[int], deadline: float | None) -> None:
        """Bring the KV cache to ``tokens``, reusing the longest prefix already there (same instruction); the
        caller holds the model's lock."""
        lib = self._lib
        reuse = 0
        for cached, token in zip(self.kv_tokens, tokens, strict=False):
            if cached != token:
                break
            reuse += 1
        reuse = min(reuse, len(tokens) - 1)  # the last prompt token is always evaluated: its logits start decoding
        memory = lib.llama_get_memory(self._ctx)
        if not lib.llama_memory_seq_rm(memory, 0, reuse, -1):
            lib.llama_memory_clear(memory, True)
            reuse = 0
        self.kv_tokens = tokens[:reuse]
        for start in range(reuse, len(tokens), self._model.n_batch):
            if deadline is not None and start > reuse and time.monotonic() >= deadline:
                raise DeadlineReached(
                    f"the deadline passed while reading the prompt ({start} of {len(tokens)} tokens)",
                    prompt_tokens=len(tokens),
                )
            chunk = tokens[start : start + self._model.n_batch]
            self._decode_tokens(chunk)

    def _decode_tokens(self, tokens: list[int]) -> None:
        array = (self._lib.llama_token * len(tokens))(*tokens)
        status = self._lib.llama_decode(self._ctx, self._lib.llama_batch_get_one(array, len(tokens)))
        if status != 0:
            self._clear_kv()
            raise GenerationError(f"llama_decode failed with status {status} on a batch of {len(tokens)} tokens")
        self.kv_tokens.extend(tokens)

    def _decode(
        self,
        sampler: Any,
        options: GenerationOptions,
        deadline: float | None,
        ignore_eos: bool,
        sink: TextSink | None,
        prompt: list[int],
        draft_max: int,
    ) -> _Decoded:
        """Sample, accept and decode until the output finishes or the deadline passes.

        With ``draft_max``, each step drafts the tokens that followed the text's last n-gram where it occurred
        before (``lookup.PromptLookup``), decodes the sampled token and the draft in one batch with logits at
        every position, and samples position by position while the model agrees with the draft: every token
        kept is the one a step of its own would have sampled from the same cells, so greedy output is
        unchanged (up to the kernels' rounding: a batch may order sums differently from a single token, which
        can tip a near-tie of the two best logits). The cells of the rejected tail are removed.
        """
        decoded = _Decoded(OutputText(options, self._tokenizer.eog_ids, self._tokenizer.eog_texts, ignore_eos, sink))
        output = decoded.output
        lookup = PromptLookup(prompt) if draft_max > 0 else None
        length = DraftLength(draft_max)
        token = self._lib.llama_sampler_sample(sampler, self._ctx, -1)
        while not output.accept(token, self._tokenizer.piece):
            if deadline is not None and time.monotonic() >= deadline:
                output.finish_reason = "deadline"
                break
            decoded.steps += 1
            draft: list[int] = []
            if lookup is not None:
                lookup.extend((token,))
                # A drafted token past max_tokens could never be kept.
                draft = lookup.draft(min(length.k, output.max_tokens - output.generated - 1))
                length.step()
            if not draft:
                self._decode_tokens([token])
                token = self._lib.llama_sampler_sample(sampler, self._ctx, -1)
                continue
            assert lookup is not None
            token, kept, finished = self._check_draft(sampler, output, lookup, token, draft)
            decoded.drafted += len(draft)
            decoded.accepted += kept
            decoded.draft_steps.append((len(draft), kept))
            length.update(kept)
            if finished:
                break
        return decoded

    def _check_draft(
        self, sampler: Any, output: OutputText, lookup: PromptLookup, token: int, draft: list[int]
    ) -> tuple[int, int, bool]:
        """Decode ``token`` and ``draft`` in one step; keep the draft's longest prefix the sampler agrees with.

        Returns the next token (sampled, not decoded yet), how many drafted tokens were kept, and whether the
        output finished on one of them.
        """
        lib = self._lib
        start = len(self.kv_tokens)
        batch = self._verify_batch(len(draft) + 1)
        for i, candidate in enumerate((token, *draft)):
            put_token(batch, i, candidate, start + i, 0, True)
        batch.n_tokens = len(draft) + 1
        status = lib.llama_decode(self._ctx, batch)
        if status != 0:
            self._clear_kv()
            raise GenerationError(f"llama_decode failed with status {status} checking {len(draft)} drafted tokens")
        self.kv_tokens.extend((token, *draft))
        kept = 0
        finished = False
        sampled = lib.llama_sampler_sample(sampler, self._ctx, 0)
        while kept < len(draft) and sampled == draft[kept]:
            kept += 1
            if output.accept(sampled, self._tokenizer.piece):
                finished = True
                break
            lookup.extend((sampled,))
            sampled = lib.llama_sampler_sample(sampler, self._ctx, kept)
        # The cells after the last kept token hold a rejected guess: they go.
        keep = start + 1 + kept
        if keep < len(self.kv_tokens):
            if not lib.llama_memory_seq_rm(lib.llama_get_memory(self._ctx), 0, keep, -1):
                self._clear_kv()
                raise GenerationError("llama.cpp could not remove the rejected drafted tokens from the KV cache")
            del self.kv_tokens[keep:]
        return sampled, kept, finished

    def _verify_batch(self, size: int) -> Any:
        """A llama_batch of at least ``size`` tokens with logits per token, kept for the next step."""
        if self._draft_batch is None or self._draft_batch[0] < size:
            if self._draft_batch is not None:
                self._lib.llama_batch_free(self._draft_batch[1])
            capacity = max(size, self.spec_draft_max + 1)
            self._draft_batch = (capacity, self._lib.llama_batch_init(capacity, 0, 1))
        return self._draft_batch[1]
