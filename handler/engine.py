"""The process-wide llama.cpp model: loaded once, prompts built safely, generation with timings.

``llama_cpp`` is imported only when the model loads, so an environment that answers from the
results table never pays for it.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import logging
import re
import resource
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from handler import llama_builds
from handler.config import Settings
from handler.errors import DeadlineReached, GenerationError, InputTooLong, InvalidRequest, ModelLoadError
from handler.observability import logger
from handler.schemas import GenerationOptions, ModelInfo
from handler.tasks import Message

if TYPE_CHECKING:
    from llama_cpp import Llama

_HASH_CHUNK = 8 * 1024 * 1024
# Values per block of each K cache type offered (llama.cpp cuts the K cache into per-head rows).
_KV_BLOCK_SIZE = {"f16": 1, "q8_0": 32}
# C's isspace(), which llama.cpp uses when a special token strips the whitespace beside it.
_C_WHITESPACE = " \t\n\v\f\r"


@dataclass(frozen=True)
class ModelIdentity:
    """What identifies the model in result ids: its file name and content hash."""

    file: str
    sha256: str


@lru_cache(maxsize=4)
def model_identity(path: Path, sha256: str | None = None) -> ModelIdentity:
    """The model's identity without loading it: a pinned hash, its ``.sha256`` sidecar, or a hash of the file."""
    if sha256:
        return ModelIdentity(path.resolve().name, sha256)
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        pinned = sidecar.read_text(encoding="utf-8").split()
        if pinned and re.fullmatch(r"[0-9a-f]{64}", pinned[0]):
            return ModelIdentity(path.resolve().name, pinned[0])
    try:
        digest = hashlib.sha256()
        with path.open("rb") as model_file:
            while chunk := model_file.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise ModelLoadError(f"cannot read the model file MODEL_PATH={str(path)!r}: {exc.strerror}") from exc
    return ModelIdentity(path.resolve().name, digest.hexdigest())


@dataclass(frozen=True)
class PromptTokens:
    """A prompt as token ids, with the token ranges that hold message content (data, never control)."""

    tokens: list[int]
    data_spans: list[tuple[int, int]]


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


@dataclass(frozen=True)
class _Special:
    id: int
    lstrip: bool
    rstrip: bool


@dataclass
class _Text:
    text: str
    is_data: bool


class _Stream:
    """One generation's output as tokens arrive: stop strings, max_tokens and end-of-generation tokens."""

    def __init__(
        self, options: GenerationOptions, eog_ids: frozenset[int], eog_texts: Sequence[str], ignore_eos: bool
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

    def accept(self, token: int, piece: Callable[[int], bytes]) -> bool:
        """Take the sampled token; True when the generation is finished (the token needs no decoding)."""
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

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", errors="ignore").strip()


@dataclass
class _Slot:
    """A request being decoded in the batch context, as one llama.cpp sequence."""

    index: int
    seq: int
    prompt: PromptTokens
    stream: _Stream
    sampler: Any
    reserved: int
    position: int = 0
    next_token: int = -1
    prompt_ms: float = 0.0
    eval_ms: float = 0.0
    eval_runs: int = 0
    started: float = 0.0


class Engine:
    """One loaded model and the only way the service talks to llama.cpp."""

    def __init__(
        self,
        llama: Llama,
        identity: ModelIdentity,
        n_threads: int,
        load_ms: float,
        parallel: int = 1,
        batch_n_ctx: int | None = None,
    ) -> None:
        import llama_cpp

        self._llama = llama
        self._lib = llama_cpp
        self._lock = threading.Lock()
        self.identity = identity
        self.n_threads = n_threads
        self.load_ms = load_ms
        self.n_ctx: int = llama.n_ctx()
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelLoadError(f"model {identity.file} has no tokenizer.chat_template in its GGUF metadata")
        self._template = _compile_template(template)
        self._vocab = llama._model.vocab
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._specials, self._eog_ids = self._read_vocabulary()
        #: The texts of the end-of-generation tokens: stop strings of every generation with this model.
        self.eog_texts = tuple(sorted({self._token_text(token) for token in self._eog_ids} - {""}))
        self._special_ids = {special.id for special in self._specials.values()}
        self._special_pattern = re.compile(
            "|".join(re.escape(text) for text in sorted(self._specials, key=len, reverse=True))
        )
        self._ctx = llama._ctx.ctx
        self.n_batch: int = llama.n_batch
        #: Requests decoded together by generate_batch, and the KV cache size they share.
        self.parallel = parallel
        self.batch_n_ctx = max(batch_n_ctx or self.n_ctx, self.n_ctx)
        self._batch: tuple[Any, Any] | None = None
        #: The K cache type in use (the batch context copies the main context's parameters).
        self.kv_cache_type_k = ggml_type_name(llama.context_params.type_k)
        self._kv_tokens: list[int] = []
        #: Speeds measured on this machine, for predicting whether a request fits a time budget.
        self.measured_prompt_tokens_per_s: float | None = None
        self.measured_eval_tokens_per_s: float | None = None
        self._piece_buffer = ctypes.create_string_buffer(64)
        self._bos = llama_cpp.llama_vocab_bos(self._vocab)
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab)) and self._bos >= 0
        self.info = ModelInfo(
            file=identity.file,
            sha256=identity.sha256,
            quantization=_quantization_name(llama_cpp, llama.metadata.get("general.file_type")),
            context_length=self.n_ctx,
        )

    def _read_vocabulary(self) -> tuple[dict[str, _Special], frozenset[int]]:
        """In one pass over the vocabulary: the tokens llama.cpp matches in text when it parses special
        tokens (with their strip rules), and the end-of-generation tokens."""
        lib = self._lib
        matched = lib.LLAMA_TOKEN_ATTR_CONTROL | lib.LLAMA_TOKEN_ATTR_USER_DEFINED | lib.LLAMA_TOKEN_ATTR_UNKNOWN
        specials = {}
        eog_ids = set()
        for token in range(self.n_vocab):
            if lib.llama_vocab_is_eog(self._vocab, token):
                eog_ids.add(token)
            attr = lib.llama_vocab_get_attr(self._vocab, token)
            if attr & matched:
                text = lib.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")
                if text:
                    specials[text] = _Special(
                        token,
                        lstrip=bool(attr & lib.LLAMA_TOKEN_ATTR_LSTRIP),
                        rstrip=bool(attr & lib.LLAMA_TOKEN_ATTR_RSTRIP),
                    )
        return specials, frozenset(eog_ids)

    # -- prompts -------------------------------------------------------------------------------

    def render(self, messages: Sequence[Message]) -> str:
        """The chat template rendered as one string, as llama-cpp-python's chat path does (reference only)."""
        return self._template.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=self._token_text(self._bos),
            eos_token=self._token_text(self._lib.llama_vocab_eos(self._vocab)),
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
            bos_token=self._token_text(self._bos),
            eos_token=self._token_text(self._lib.llama_vocab_eos(self._vocab)),
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
        if self._add_bos and not (items and isinstance(items[0], _Special) and items[0].id == self._bos):
            tokens.append(self._bos)
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
        return str(self._lib.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace"))

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

    def is_special(self, token: int) -> bool:
        """Whether the token is a control (or reserved) token rather than text."""
        return token in self._special_ids

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

    # -- generation ----------------------------------------------------------------------------

    def generate(
        self,
        prompt: PromptTokens,
        options: GenerationOptions,
        deadline: float | None = None,
        ignore_eos: bool = False,
    ) -> Completion:
        """Generate until an end-of-generation token, a stop string, ``max_tokens`` or the deadline.

        ``deadline`` is a ``time.monotonic()`` value: a generation still running then ends with
        ``finish_reason="deadline"`` (or raises DeadlineReached while still reading the prompt).
        ``ignore_eos`` keeps generating past end-of-generation tokens (benchmarks on random weights).
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
                text, generated, finish_reason = self._decode(sampler, options, deadline, ignore_eos)
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
        self, sampler: Any, options: GenerationOptions, deadline: float | None, ignore_eos: bool
    ) -> tuple[str, int, str]:
        stream = _Stream(options, self._eog_ids, self.eog_texts, ignore_eos)
        while True:
            token = self._lib.llama_sampler_sample(sampler, self._ctx, -1)
            if stream.accept(token, self._piece):
                break
            if deadline is not None and time.monotonic() >= deadline:
                stream.finish_reason = "deadline"
                break
            self._decode_tokens([token])
        return stream.text, stream.generated, stream.finish_reason or "length"

    # -- batched generation ----------------------------------------------------------------------

    def generate_batch(
        self,
        jobs: Sequence[tuple[PromptTokens, GenerationOptions]],
        deadline: float | None = None,
        ignore_eos: bool = False,
    ) -> list[Completion | None]:
        """Generate several requests together: each decode step reads the weights once for all of them.

        Up to ``parallel`` requests are decoded as llama.cpp sequences of one context, each with its own
        sampler, stops and ``max_tokens``; a finished request frees its slot for the next one. Decode is
        memory bound, so the step costs about what one sequence's step costs. Requests still waiting or
        unfinished when the deadline passes come back as None (nothing partial is returned).
        """
        for prompt, options in jobs:
            self.check_fits(prompt, options.max_tokens)
        results: list[Completion | None] = [None] * len(jobs)
        with self._lock:
            context, batch = self._batch_context()
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
                        need = len(prompt.tokens) + options.max_tokens
                        if active and reserved + need > self.batch_n_ctx:
                            break
                        waiting.popleft()
                        slot = _Slot(
                            index,
                            free.pop(),
                            prompt,
                            _Stream(options, self._eog_ids, self.eog_texts, ignore_eos),
                            self._sampler(options, ignore_eos),
                            need,
                        )
                        reserved += need
                        slot.started = time.perf_counter()
                        self._prefill(context, batch, slot)
                        slot.prompt_ms = (time.perf_counter() - slot.started) * 1000.0
                        first = self._lib.llama_sampler_sample(slot.sampler, context, -1)
                        if slot.stream.accept(first, self._piece):
                            results[index] = self._finish(slot, memory, free)
                            reserved -= slot.reserved
                        else:
                            slot.next_token = first
                            active.append(slot)
                    if not active:
                        continue
                    # One step: the next token of every active request in one llama_decode.
                    for i, slot in enumerate(active):
                        self._batch_set(batch, i, slot.next_token, slot.position, slot.seq, True)
                    batch.n_tokens = len(active)
                    step_started = time.perf_counter()
                    self._batch_decode(context, batch)
                    step_ms = (time.perf_counter() - step_started) * 1000.0
                    still: list[_Slot] = []
                    for i, slot in enumerate(active):
                        slot.position += 1
                        slot.eval_ms += step_ms
                        slot.eval_runs += 1
                        token = self._lib.llama_sampler_sample(slot.sampler, context, i)
                        if slot.stream.accept(token, self._piece):
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

    def _batch_context(self) -> tuple[Any, Any]:
        """The context for batched generation, created on first use (its KV cache is shared by the sequences)."""
        if self._batch is None:
            lib = self._lib
            params = type(self._llama.context_params).from_buffer_copy(self._llama.context_params)
            params.n_ctx = self.batch_n_ctx
            params.n_seq_max = self.parallel
            params.kv_unified = True
            context = lib.llama_init_from_model(self._llama._model.model, params)
            if not context:
                raise GenerationError(
                    f"llama.cpp could not create a batch context of {self.batch_n_ctx} tokens for "
                    f"{self.parallel} sequences; lower BATCH_N_CTX or BATCH_PARALLEL"
                )
            self._batch = (context, lib.llama_batch_init(max(self.n_batch, self.parallel), 0, 1))
        return self._batch

    def _batch_set(self, batch: Any, i: int, token: int, position: int, seq: int, logits: bool) -> None:
        batch.token[i] = token
        batch.pos[i] = position
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _batch_decode(self, context: Any, batch: Any) -> None:
        status = self._lib.llama_decode(context, batch)
        if status != 0:
            raise GenerationError(f"llama_decode failed with status {status} on a batch of {batch.n_tokens} tokens")

    def _prefill(self, context: Any, batch: Any, slot: _Slot) -> None:
        """Evaluate a request's prompt in its own sequence, keeping the last token's logits."""
        tokens = slot.prompt.tokens
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            for i, token in enumerate(chunk):
                self._batch_set(batch, i, token, start + i, slot.seq, start + i == len(tokens) - 1)
            batch.n_tokens = len(chunk)
            self._batch_decode(context, batch)
        slot.position = len(tokens)

    def _finish(self, slot: _Slot, memory: Any, free: list[int]) -> Completion:
        self._lib.llama_sampler_free(slot.sampler)
        self._lib.llama_memory_seq_rm(memory, slot.seq, -1, -1)
        free.append(slot.seq)
        return Completion(
            text=slot.stream.text,
            finish_reason=slot.stream.finish_reason or "length",
            prompt_tokens=len(slot.prompt.tokens),
            prompt_eval_tokens=len(slot.prompt.tokens),
            prompt_ms=round(slot.prompt_ms, 3),
            completion_tokens=slot.stream.generated,
            eval_runs=slot.eval_runs,
            eval_ms=round(slot.eval_ms, 3),
            total_ms=round((time.perf_counter() - slot.started) * 1000.0, 3),
        )

    def _piece(self, token: int) -> bytes:
        """The token's text as bytes (control tokens render as nothing)."""
        length = self._lib.llama_token_to_piece(
            self._vocab, token, self._piece_buffer, len(self._piece_buffer), 0, False
        )
        if length < 0:  # the buffer is too small: llama.cpp says how big it must be
            self._piece_buffer = ctypes.create_string_buffer(-length)
            length = self._lib.llama_token_to_piece(self._vocab, token, self._piece_buffer, -length, 0, False)
        return self._piece_buffer.raw[:length]


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


def _quantization_name(lib: Any, file_type: str | None) -> str | None:
    if file_type is None:
        return None
    names = {
        getattr(lib, name): name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_")
        for name in dir(lib)
        if name.startswith("LLAMA_FTYPE_") and name != "LLAMA_FTYPE_GUESSED"
    }
    try:
        return names.get(int(file_type), f"ftype {file_type}")
    except ValueError:
        return str(file_type)


def ggml_type(name: str) -> int:
    """llama.cpp's number for a KV cache type offered here ("f16", "q8_0")."""
    import llama_cpp

    return int(getattr(llama_cpp, f"GGML_TYPE_{name.upper()}"))


def ggml_type_name(value: int) -> str:
    """The name of a KV cache type offered here, from llama.cpp's number (the number itself for others)."""
    return next((name for name in _KV_BLOCK_SIZE if ggml_type(name) == value), str(value))


def kv_cache_type_k(path: Path, requested: str) -> str:
    """The K cache type for this model: ``requested`` when each attention head's K row is whole blocks of it.

    A quantized K cache is read per head; with a head size that is not a multiple of the block size
    llama.cpp computes wrong attention scores without any error (measured on generated models: logits
    off by up to 0.65 with 16-value heads, 0.006 with 32-value heads), so such models keep f16.
    """
    block = _KV_BLOCK_SIZE[requested]
    if block == 1:
        return requested
    head_size = _key_head_size(path)
    return requested if head_size is not None and head_size % block == 0 else "f16"


def _key_head_size(path: Path) -> int | None:
    """Values per attention head in the K cache, from the GGUF metadata (None when it cannot be read)."""
    import llama_cpp

    # llama-cpp-python prints llama.cpp's log through this logger; Llama(verbose=False) sets the same level.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # metadata and vocabulary only: tens of milliseconds, no weights
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        return None
    buffer = ctypes.create_string_buffer(256)

    def metadata(key: str) -> int | None:
        if llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer)) < 0:
            return None
        try:
            return int(buffer.value)
        except ValueError:  # per-layer arrays and the like: not a single size
            return None

    try:
        if llama_cpp.llama_model_meta_val_str(model, b"general.architecture", buffer, len(buffer)) < 0:
            return None
        arch = buffer.value.decode("utf-8", errors="replace")
        key_length = metadata(f"{arch}.attention.key_length")
        if key_length is not None:
            return key_length
        embedding, heads = metadata(f"{arch}.embedding_length"), metadata(f"{arch}.attention.head_count")
        return embedding // heads if embedding and heads else None
    finally:
        llama_cpp.llama_model_free(model)


def load_engine(settings: Settings) -> Engine:
    """Load the GGUF named by the settings; errors say which file and why."""
    path = settings.model_path
    if not path.is_file():
        raise ModelLoadError(f"model file not found: MODEL_PATH={str(path)!r}")
    identity = model_identity(path, settings.model_sha256)
    # Before llama_cpp's first import, which loads the libraries of the build chosen here.
    build = llama_builds.select_build(settings.llama_builds_dir)
    import llama_cpp

    started = time.perf_counter()
    type_k = kv_cache_type_k(path, settings.kv_cache_type_k)
    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            n_threads_batch=settings.threads_batch,
            n_batch=settings.n_batch,
            n_ubatch=settings.n_ubatch,
            use_mmap=settings.use_mmap,
            type_k=ggml_type(type_k),
            flash_attn=settings.flash_attn,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"llama.cpp could not load {path.name}: {exc}") from exc
    # Close before interpreter shutdown tears down the ctypes bindings the model's finalizer needs.
    atexit.register(llama.close)
    engine = Engine(llama, identity, settings.n_threads, 0.0, settings.batch_parallel, settings.batch_n_ctx)
    engine.warm_up()
    engine.load_ms = round((time.perf_counter() - started) * 1000.0, 3)
    # Which instruction sets this llama.cpp was compiled for: the build is what decides the speed.
    logger.info(
        "model loaded",
        model=identity.file,
        load_ms=engine.load_ms,
        **build.log_fields(),
        system_info=llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
    )
    return engine


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine(settings: Settings) -> tuple[Engine, bool]:
    """The process-wide engine, loaded on first use; the flag says whether this call loaded it."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            return _engine, False
        _engine = load_engine(settings)
        return _engine, True


def loaded_engine() -> Engine | None:
    """The engine if this process has loaded it already."""
    return _engine
