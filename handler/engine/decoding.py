"""Single-request decoding in the main context: sampling, stops, the deadline, KV-prefix reuse and timings."""

from __future__ import annotations

import codecs
import ctypes
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from handler.core.errors import DeadlineReached, GenerationError
from handler.engine.grammar import grammar_sampler
from handler.engine.prompt import Prompting, PromptTokens
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
    eval_runs: int
    eval_ms: float
    total_ms: float

    @property
    def prompt_tokens_per_s(self) -> float:
        return _per_second(self.prompt_eval_tokens, self.prompt_ms)

    @property
    def eval_tokens_per_s(self) -> float:
        return _per_second(self.eval_runs, self.eval_ms)


def _per_second(count: int, milliseconds: float) -> float:
    return round(count * 1000.0 / milliseconds, 3) if milliseconds > 0 else 0.0


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


#: Receives a generation's text as it is made: pieces that, joined, are the completion's text exactly.
TextSink = Callable[[str], None]


class _Stream:
    """One generation's output as tokens arrive: stop strings, max_tokens and end-of-generation tokens.

    With a sink, the text is also handed on as it comes, each piece whole UTF-8 characters, and never a byte
    that may turn out to begin a stop string (the last ``longest stop - 1`` bytes wait for the next token);
    leading and trailing whitespace wait too, since the completion's text is stripped: the pieces joined are
    exactly ``text``.
    """

    def __init__(
        self,
        options: GenerationOptions,
        eog_ids: frozenset[int],
        eog_texts: Sequence[str],
        ignore_eos: bool,
        sink: TextSink | None = None,
    ) -> None:
        self.max_tokens = options.max_tokens
        # A model may also write its end-of-turn marker as ordinary text pieces (SmolLM2 writes
        # "<|im_end|>" that way after text that spells it): the marker's text stops like the token.
        stops = list(options.stop) if ignore_eos else [*options.stop, *eog_texts]
        self.stops = [stop.encode("utf-8") for stop in dict.fromkeys(stops)]
        self.longest_stop = max((len(stop) for stop in self.stops), default=0)
        self.eog_ids = frozenset() if ignore_eos else eog_ids
        self.output = bytearray()
        self.generated = 0
        self.finish_reason: str | None = None
        self._sink = sink
        self._handed = 0  # bytes of output given to the decoder so far
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._began = False
        self._held = ""  # trailing whitespace, handed on only once more text follows it

    def accept(self, token: int, piece: Callable[[int], bytes]) -> bool:
        """Take the sampled token; True when the generation is finished (the token needs no decoding)."""
        finished = self._take(token, piece)
        self._hand_on(final=finished)
        return finished

    def _take(self, token: int, piece: Callable[[int], bytes]) -> bool:
        if token in self.eog_ids:
            self.finish_reason = "stop"
            return True
        self.generated += 1
        text = piece(token)
        self.output += text
        if self.stops:
            window = max(0, len(self.output) - len(text) - self.longest_stop + 1)
            found = [i for i in (self.output.find(stop, window) for stop in self.stops) if i >= 0]
            if found:
                del self.output[min(found) :]
                self.finish_reason = "stop"
                return True
        if self.generated >= self.max_tokens:
            self.finish_reason = "length"
            return True
        return False

    def _hand_on(self, final: bool) -> None:
        """Give the sink what can no longer change (a stop found later starts after it: see ``_take``'s window)."""
        if self._sink is None:
            return
        end = len(self.output) if final else len(self.output) - max(self.longest_stop - 1, 0)
        if end <= self._handed and not final:
            return
        text = self._decoder.decode(bytes(self.output[self._handed : max(end, self._handed)]), final=final)
        self._handed = max(end, self._handed)
        if not self._began:
            text = text.lstrip()
            if not text:
                return
            self._began = True
        text = self._held + text
        body = text.rstrip()
        self._held = text[len(body) :]
        if body:
            self._sink(body)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", errors="ignore").strip()


class Decoding(Prompting):
    """The Engine's single-request side, one sequence in the main context (Engine.__init__ sets the state)."""

    _lock: threading.Lock
    _ctx: Any
    n_batch: int
    _kv_tokens: list[int]
    measured_prompt_tokens_per_s: float | None
    measured_eval_tokens_per_s: float | None
    _piece_buffer: ctypes.Array[ctypes.c_char]

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
    ) -> Completion:
        """Generate until an end-of-generation token, a stop string, ``max_tokens`` or the deadline.

        ``deadline`` is a ``time.monotonic()`` value: a generation still running then ends with
        ``finish_reason="deadline"`` (or raises DeadlineReached while still reading the prompt).
        ``ignore_eos`` keeps generating past end-of-generation tokens (benchmarks on random weights).
        ``sink`` receives the text as it is made (a streamed answer); a generation cut by the deadline hands
        on no final piece.
        Sampling runs in llama.cpp's own sampler chain: no logits cross into Python.
        """
        self.check_fits(prompt, options.max_tokens)
        lib = self._lib
        with self._lock:
            lib.llama_perf_context_reset(self._ctx)
            started = time.perf_counter()
            sampler = self._sampler(options, ignore_eos)
            try:
                self._evaluate_prompt(prompt.tokens, deadline)
                text, generated, finish_reason = self._decode(sampler, options, deadline, ignore_eos, sink)
            finally:
                lib.llama_sampler_free(sampler)
            total_ms = (time.perf_counter() - started) * 1000.0
            perf = lib.llama_perf_context(self._ctx)
        completion = Completion(
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=len(prompt.tokens),
            prompt_eval_tokens=int(perf.n_p_eval),
            prompt_ms=round(perf.t_p_eval_ms, 3),
            completion_tokens=generated,
            eval_runs=int(perf.n_eval),
            eval_ms=round(perf.t_eval_ms, 3),
            total_ms=round(total_ms, 3),
        )
        # Short runs time mostly overhead; only runs long enough to be representative update the estimate.
        if completion.prompt_eval_tokens >= 16:
            self.measured_prompt_tokens_per_s = completion.prompt_tokens_per_s
        if completion.eval_runs >= 8:
            self.measured_eval_tokens_per_s = completion.eval_tokens_per_s
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
        sink: TextSink | None = None,
    ) -> tuple[str, int, str]:
        stream = _Stream(options, self._eog_ids, self.eog_texts, ignore_eos, sink)
        while True:
            token = self._lib.llama_sampler_sample(sampler, self._ctx, -1)
            if stream.accept(token, self._piece):
                break
            if deadline is not None and time.monotonic() >= deadline:
                stream.finish_reason = "deadline"
                break
            self._decode_tokens([token])
        return stream.text, stream.generated, stream.finish_reason or "length"

    def _piece(self, token: int) -> bytes:
        """The token's text as bytes (control tokens render as nothing)."""
        length = self._lib.llama_token_to_piece(
            self._vocab, token, self._piece_buffer, len(self._piece_buffer), 0, False
        )
        if length < 0:  # the buffer is too small: llama.cpp says how big it must be
            self._piece_buffer = ctypes.create_string_buffer(-length)
            length = self._lib.llama_token_to_piece(self._vocab, token, self._piece_buffer, -length, 0, False)
        return self._piece_buffer.raw[:length]
