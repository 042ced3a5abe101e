"""Single-request decoding in the main context: sampling, stops, the deadline, KV-prefix reuse and timings."""

from __future__ import annotations

import ctypes
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from handler.core.errors import DeadlineReached, GenerationError
from handler.engine.grammar import grammar_sampler
from handler.engine.lookup import DraftLength, PromptLookup
from handler.engine.prompt import Prompting, PromptTokens
from handler.engine.text_stream import TextSink, _Stream
from handler.formats.json_output import grammar
from handler.formats.schemas import GenerationOptions


@dataclass(frozen=True)
class Completion:
    """One generation's text and llama.cpp's own timings of it."""

    text: str
    finish_reason: str
    prompt_tokens: int
    prompt_eval_tokens: int
    prompt_ms: float
    completion_tokens: int
    #: llama_decode steps after the prompt: one per token, or one per drafted run checked at once.
    eval_runs: int
    eval_ms: float
    total_ms: float
    #: Tokens guessed by prompt lookup and checked, and how many of them the model agreed with.
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    #: Each drafting step's (drafted, kept) tokens, in order: what a cost model of drafting needs.
    draft_steps: tuple[tuple[int, int], ...] = ()

    @property
    def prompt_tokens_per_s(self) -> float:
        return _per_second(self.prompt_eval_tokens, self.prompt_ms)

    @property
    def eval_tokens_per_s(self) -> float:
        """Tokens that came out of the decode steps per second: each step's own, plus its accepted drafts."""
        return _per_second(self.eval_runs + self.accepted_tokens, self.eval_ms)

    @property
    def eval_steps_per_s(self) -> float:
        """Decode steps per second: a lower bound of the token speed whatever a text's drafts win."""
        return _per_second(self.eval_runs, self.eval_ms)


def _per_second(count: int, milliseconds: float) -> float:
    return round(count * 1000.0 / milliseconds, 3) if milliseconds > 0 else 0.0


def _evaluated(perf: Any) -> int:
    """Tokens llama.cpp's counters say were evaluated; they read a count of 0 as 1, a zero time tells which."""
    return (int(perf.n_p_eval) if perf.t_p_eval_ms > 0 else 0) + (int(perf.n_eval) if perf.t_eval_ms > 0 else 0)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


@dataclass
class _Decoded:
    """What a decode loop made: the stream, its llama_decode steps and the drafted and kept tokens."""

    stream: _Stream
    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    draft_steps: list[tuple[int, int]] = field(default_factory=list)


class Decoding(Prompting):
    """The Engine's single-request side, one sequence in the main context (Engine.__init__ sets the state)."""

    _lock: threading.Lock
    _ctx: Any
    n_batch: int
    _kv_tokens: list[int]
    measured_prompt_tokens_per_s: float | None
    measured_eval_tokens_per_s: float | None
    _piece_buffer: ctypes.Array[ctypes.c_char]
    #: Most tokens drafted by prompt lookup per decode step (SPEC_DRAFT_MAX; 0: none).
    spec_draft_max: int
    _draft_batch: tuple[int, Any] | None

    def warm_up(self) -> None:
        """Decode one token and forget it, so the first request does not pay llama.cpp's first-decode setup.

        The first llama_decode allocates the compute graph, starts the threads and touches the weights
        that are read from the mapped file: time that belongs to loading, not to a request's prompt.
        """
        with self._lock:
            token = self._bos if self._bos >= 0 else 0
            self._decode_tokens([token])
            # Decoding is asynchronous: wait for it, so its time is not booked to the first request.
            self._lib.llama_synchronize(self._ctx)
            self._lib.llama_perf_context_reset(self._ctx)
            self._clear_kv()

    def clear_cache(self) -> None:
        """Forget the prompt kept in the KV cache: the next request evaluates its whole prompt."""
        with self._lock:
            self._clear_kv()

    def _clear_kv(self) -> None:
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)
        self._kv_tokens = []

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
        Sampling runs in llama.cpp's own sampler chain: no logits cross into Python.
        ``draft_max`` (default ``spec_draft_max``) bounds the tokens drafted per step by prompt lookup; greedy
        requests only (temperature 0), whose output drafting does not change (``_decode``).
        """
        self.check_fits(prompt, options.max_tokens)
        lib = self._lib
        if options.temperature != 0.0:
            draft_max = 0
        elif draft_max is None:
            draft_max = self.spec_draft_max
        with self._lock:
            lib.llama_perf_context_reset(self._ctx)
            started = time.perf_counter()
            sampler = self._sampler(options, ignore_eos)
            try:
                self._evaluate_prompt(prompt.tokens, deadline)
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
            text=decoded.stream.text,
            finish_reason=decoded.stream.finish_reason or "length",
            prompt_tokens=len(prompt.tokens),
            prompt_eval_tokens=prompt_evaluated,
            prompt_ms=round(prompt_ms, 3),
            completion_tokens=decoded.stream.generated,
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

    def _sampler(self, options: GenerationOptions, ignore_eos: bool) -> Any:
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        rules = grammar(options.response_format)
        if rules is not None:
            # First in the chain: every later sampler chooses among the tokens the grammar allows.
            constrained = grammar_sampler(lib, self._vocab, rules)
            if constrained is None:
                lib.llama_sampler_free(chain)
                raise GenerationError("llama.cpp could not parse the grammar made from the response format")
            lib.llama_sampler_chain_add(chain, constrained)
        if ignore_eos:
            biases = (lib.llama_logit_bias * len(self._eog_ids))(
                *(lib.llama_logit_bias(token, float("-inf")) for token in self._eog_ids)
            )
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(self.n_vocab, len(biases), biases))
        if options.repeat_penalty != 1.0:
            lib.llama_sampler_chain_add(
                chain, lib.llama_sampler_init_penalties(self.n_vocab, 64, options.repeat_penalty, 0.0, 0.0)
            )
        if options.temperature == 0.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            # llama-cpp-python's defaults around temperature and top_p, so sampled output is comparable.
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(40))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(options.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(0.05, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(options.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(options.seed))
        return chain

    def _evaluate_prompt(self, tokens: list[int], deadline: float | None) -> None:
        """Bring the KV cache to ``tokens``, reusing the longest prefix already there (same instruction)."""
        lib = self._lib
        reuse = 0
        for cached, token in zip(self._kv_tokens, tokens, strict=False):
            if cached != token:
                break
            reuse += 1
        reuse = min(reuse, len(tokens) - 1)  # the last prompt token is always evaluated: its logits start decoding
        memory = lib.llama_get_memory(self._ctx)
        if not lib.llama_memory_seq_rm(memory, 0, reuse, -1):
            lib.llama_memory_clear(memory, True)
            reuse = 0
        self._kv_tokens = tokens[:reuse]
        for start in range(reuse, len(tokens), self.n_batch):
            if deadline is not None and start > reuse and time.monotonic() >= deadline:
                raise DeadlineReached(
                    f"the deadline passed while reading the prompt ({start} of {len(tokens)} tokens)",
                    prompt_tokens=len(tokens),
                )
            chunk = tokens[start : start + self.n_batch]
            self._decode_tokens(chunk)

    def _decode_tokens(self, tokens: list[int]) -> None:
        array = (self._lib.llama_token * len(tokens))(*tokens)
        status = self._lib.llama_decode(self._ctx, self._lib.llama_batch_get_one(array, len(tokens)))
        if status != 0:
            self._clear_kv()
            raise GenerationError(f"llama_decode failed with status {status} on a batch of {len(tokens)} tokens")
        self._kv_tokens.extend(tokens)

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
        """Sample, accept and decode until the stream finishes or the deadline passes.

        With ``draft_max``, each step drafts the tokens that followed the text's last n-gram where it occurred
        before (``lookup.PromptLookup``), decodes the sampled token and the draft in one batch with logits at
        every position, and samples position by position while the model agrees with the draft: every token
        kept is the one a step of its own would have sampled from the same cells, so greedy output is
        unchanged (up to the kernels' rounding: a batch may order sums differently from a single token, which
        can tip a near-tie of the two best logits). The cells of the rejected tail are removed.
        """
        decoded = _Decoded(_Stream(options, self._eog_ids, self.eog_texts, ignore_eos, sink))
        stream = decoded.stream
        lookup = PromptLookup(prompt) if draft_max > 0 else None
        length = DraftLength(draft_max)
        token = self._lib.llama_sampler_sample(sampler, self._ctx, -1)
        while not stream.accept(token, self._piece):
            if deadline is not None and time.monotonic() >= deadline:
                stream.finish_reason = "deadline"
                break
            decoded.steps += 1
            draft: list[int] = []
            if lookup is not None:
                lookup.extend((token,))
                # A drafted token past max_tokens could never be kept.
                draft = lookup.draft(min(length.k, stream.max_tokens - stream.generated - 1))
                length.step()
            if not draft:
                self._decode_tokens([token])
                token = self._lib.llama_sampler_sample(sampler, self._ctx, -1)
                continue
            assert lookup is not None
            token, kept, finished = self._check_draft(sampler, stream, lookup, token, draft)
            decoded.drafted += len(draft)
            decoded.accepted += kept
            decoded.draft_steps.append((len(draft), kept))
            length.update(kept)
            if finished:
                break
        return decoded

    def _check_draft(
        self, sampler: Any, stream: _Stream, lookup: PromptLookup, token: int, draft: list[int]
    ) -> tuple[int, int, bool]:
        """Decode ``token`` and ``draft`` in one step; keep the draft's longest prefix the sampler agrees with.

        Returns the next token (sampled, not decoded yet), how many drafted tokens were kept, and whether the
        stream finished on one of them.
        """
        lib = self._lib
        start = len(self._kv_tokens)
        batch = self._verify_batch(len(draft) + 1)
        for i, candidate in enumerate((token, *draft)):
            self._batch_set(batch, i, candidate, start + i, 0, True)
        batch.n_tokens = len(draft) + 1
        status = lib.llama_decode(self._ctx, batch)
        if status != 0:
            self._clear_kv()
            raise GenerationError(f"llama_decode failed with status {status} checking {len(draft)} drafted tokens")
        self._kv_tokens.extend((token, *draft))
        kept = 0
        finished = False
        sampled = lib.llama_sampler_sample(sampler, self._ctx, 0)
        while kept < len(draft) and sampled == draft[kept]:
            kept += 1
            if stream.accept(sampled, self._piece):
                finished = True
                break
            lookup.extend((sampled,))
            sampled = lib.llama_sampler_sample(sampler, self._ctx, kept)
        # The cells after the last kept token hold a rejected guess: they go.
        keep = start + 1 + kept
        if keep < len(self._kv_tokens):
            if not lib.llama_memory_seq_rm(lib.llama_get_memory(self._ctx), 0, keep, -1):
                self._clear_kv()
                raise GenerationError("llama.cpp could not remove the rejected drafted tokens from the KV cache")
            del self._kv_tokens[keep:]
        return sampled, kept, finished

    @staticmethod
    def _batch_set(batch: Any, i: int, token: int, position: int, seq: int, logits: bool) -> None:
        """Token ``i`` of a llama_batch: its position, its one sequence, whether its logits are kept."""
        batch.token[i] = token
        batch.pos[i] = position
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _verify_batch(self, size: int) -> Any:
        """A llama_batch of at least ``size`` tokens with logits per token, kept for the next step."""
        if self._draft_batch is None or self._draft_batch[0] < size:
            if self._draft_batch is not None:
                self._lib.llama_batch_free(self._draft_batch[1])
            capacity = max(size, self.spec_draft_max + 1)
            self._draft_batch = (capacity, self._lib.llama_batch_init(capacity, 0, 1))
        return self._draft_batch[1]

    def _piece(self, token: int) -> bytes:
        """The token's text as bytes (control tokens render as nothing)."""
        length = self._lib.llama_token_to_piece(
            self._vocab, token, self._piece_buffer, len(self._piece_buffer), 0, False
        )
        if length < 0:  # the buffer is too small: llama.cpp says how big it must be
            self._piece_buffer = ctypes.create_string_buffer(-length)
            length = self._lib.llama_token_to_piece(self._vocab, token, self._piece_buffer, -length, 0, False)
        return self._piece_buffer.raw[:length]
