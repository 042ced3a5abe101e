"""The documents benchmark's inputs and measurements: four tasks over one text, a long text's map step."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from bench.configs import ROOT
from handler.core.settings import Settings, settings_from
from handler.engine import (
    Completion,
    Engine,
    PromptTokens,
)
from handler.formats.schemas import GenerationOptions, SummarizeRequest

DOCUMENT_SOURCE = ROOT / "tests" / "data" / "moby-dick-chapters-1-9.txt"


TEXT_TOKENS = 2000


DOCUMENT_TOKENS = 12000


DOC_MAX_TOKENS = 64


# The quick run's sizes: every variant still runs, each a fraction of the full run's work.
QUICK_TEXT_TOKENS = 500


QUICK_DOCUMENT_TOKENS = 2400


QUICK_DOC_MAX_TOKENS = 16


# The four tasks a caller asks over one text (the text and the options are added to each).
DOCUMENT_TASKS: tuple[dict[str, str], ...] = (
    {"task": "summarize", "style": "paragraph"},
    {"task": "summarize", "style": "bullets"},
    {"task": "translate", "target_language": "French"},
    {"task": "translate", "target_language": "German"},
)


# The ways to answer the four tasks, by key, with their table labels; the first is the baseline.
TASK_VARIANTS = {
    "separate": "separate requests, nothing shared",
    "one_after_another": "one after another (prefix reuse)",
    "batched_shared": "batched, shared prefix",
    "batched_unshared": "batched, prefix not shared",
}


# The ways to run a long text's chunk requests (the map step); the first is the baseline.
CHUNK_VARIANTS = {"one_at_a_time": "one chunk at a time", "batched": "batched"}


# This machine's speeds on the bench model (2 cores, prompts of about 2,000 tokens), for the duration
# estimate printed before the run; nothing else uses them.
ESTIMATE_PROMPT_TOKENS_PER_S = 15.0


ESTIMATE_DECODE_TOKENS_PER_S = 5.0


ESTIMATE_LOAD_S = 15.0  # per child process: the model read from the page cache, the engine warmed up


DocumentJob = tuple[PromptTokens, GenerationOptions]


def leading_text(text: str, target: int, count: Callable[[str], int]) -> str:
    """The longest start of ``text`` (repeated if short) that ends after a word and counts at most ``target``.

    Unlike fit_text it keeps the text's line breaks: the chunker cuts a long text on its paragraphs.
    """
    source = text
    while count(text) < target:
        text += "\n\n" + source
    word_ends = [match.end() for match in re.finditer(r"\S+", text)]
    low, high = 0, len(word_ends) - 1  # the last word end within the target, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if count(text[: word_ends[middle]]) <= target:
            low = middle
        else:
            high = middle - 1
    return text[: word_ends[low]]


def _common_prefix(first: list[int], second: list[int]) -> int:
    shared = 0
    for mine, theirs in zip(first, second, strict=False):
        if mine != theirs:
            break
        shared += 1
    return shared


def batch_context_size(prompt_lengths: list[int], max_tokens: int, parallel: int, default: int) -> int:
    """KV cells for the ``parallel`` longest requests decoded at once with nothing shared, in whole 256s and never
    below the service's default: no variant waits for room in the batch context."""
    longest = sorted(prompt_lengths, reverse=True)[:parallel]
    needed = sum(length + max_tokens for length in longest)
    return max(default, -(-needed // 256) * 256)


def expected_task_evaluations(prompts: list[list[int]]) -> dict[str, int]:
    """Prompt tokens each variant of the four tasks should evaluate: every prompt whole, or the text once.

    One after another reuses what the previous prompt shares; batched, a prompt shares the longest prefix of
    any earlier one. The last prompt token is always evaluated (its logits start the decoding).
    """
    whole = sum(len(prompt) for prompt in prompts)

    def reused(index: int, earlier: list[list[int]]) -> int:
        return max(min(_common_prefix(prompts[index], other), len(prompts[index]) - 1) for other in earlier)

    after = whole - sum(reused(i, [prompts[i - 1]]) for i in range(1, len(prompts)))
    batched = whole - sum(reused(i, prompts[:i]) for i in range(1, len(prompts)))
    return {"separate": whole, "one_after_another": after, "batched_shared": batched, "batched_unshared": whole}


def document_inputs(settings: Settings, text_tokens: int, document_tokens: int, max_tokens: int) -> dict[str, Any]:
    """The text and the long document, cut from the test text to their token targets, with the requests over them.

    Prompts are built and counted by the service's own code (parse_request, build_messages, the model's chat
    template through its vocabulary) and the document is cut into chunk requests by handler.usecases.plan.split.
    """
    from handler.engine import prompt_counter
    from handler.formats.prompts import build_messages
    from handler.formats.schemas import parse_request
    from handler.usecases.plan import split

    counter = prompt_counter(settings)
    source = DOCUMENT_SOURCE.read_text(encoding="utf-8")
    text = leading_text(source, text_tokens, counter.count_tokens)
    document = leading_text(source, document_tokens, counter.count_tokens)
    options = {"max_tokens": max_tokens}
    task_requests = [{**task, "text": text, "options": options} for task in DOCUMENT_TASKS]
    prompts = [counter.build_prompt(build_messages(parse_request(request))).tokens for request in task_requests]
    document_request = {"task": "summarize", "style": "bullets", "text": document, "options": options}
    parsed = parse_request(document_request)
    if not isinstance(parsed, SummarizeRequest):
        raise TypeError(f"expected a summarize request, got {type(parsed).__name__}")
    chunk_prompts = [counter.build_prompt(build_messages(part)).tokens for part in split(counter, parsed, document)]
    return {
        "source": str(DOCUMENT_SOURCE.relative_to(ROOT)),
        "text": {
            "target_tokens": text_tokens,
            "tokens": counter.count_tokens(text),
            "chars": len(text),
            "words": len(text.split()),
            "requests": task_requests,
            "prompt_tokens": [len(prompt) for prompt in prompts],
            "expected_prompt_eval_tokens": expected_task_evaluations(prompts),
        },
        "document": {
            "target_tokens": document_tokens,
            "tokens": counter.count_tokens(document),
            "chars": len(document),
            "words": len(document.split()),
            "request": document_request,
            "chunks": len(chunk_prompts),
            "chunk_prompt_tokens": [len(prompt) for prompt in chunk_prompts],
        },
    }


def estimate_documents_s(inputs: dict[str, Any], task_variants: list[str], max_tokens: int, repeats: int) -> float:
    """Seconds the run should take on 2 cores: tokens to evaluate and to decode at this machine's speeds, no
    batching gain (an upper side), and one model load per child process."""
    text, document = inputs["text"], inputs["document"]
    expected: dict[str, int] = text["expected_prompt_eval_tokens"]
    chunk_prompts: list[int] = document["chunk_prompt_tokens"]
    prompt_tokens = sum(expected[variant] for variant in task_variants) + len(CHUNK_VARIANTS) * sum(chunk_prompts)
    decode_tokens = max_tokens * (len(task_variants) * len(DOCUMENT_TASKS) + len(CHUNK_VARIANTS) * len(chunk_prompts))
    once = prompt_tokens / ESTIMATE_PROMPT_TOKENS_PER_S + decode_tokens / ESTIMATE_DECODE_TOKENS_PER_S
    return repeats * (once + 2 * ESTIMATE_LOAD_S)


def _documents_engine(spec: dict[str, Any]) -> tuple[Engine, float]:
    """The service's engine as a function loads it, with the batch context the comparison needs, warmed up."""
    from handler.engine import load_engine
    from handler.formats.prompts import Message

    environ = {
        "MODEL_PATH": spec["model"],
        "MODEL_SHA256": spec["model_sha256"],  # else the load would include hashing the file
        "KV_CACHE_TYPE_K": spec["type_k"],
        "BATCH_PARALLEL": str(spec["parallel"]),
        "BATCH_N_CTX": str(spec["batch_n_ctx"]),
    }
    if spec["threads"]:
        environ["N_THREADS"] = str(spec["threads"])
    started = time.perf_counter()
    engine = load_engine(settings_from(environ))
    # The batch context is created on first use and its first llama_decode sets up the compute graph and
    # threads: an environment pays that once, not per document, so it happens before anything is timed. Its two
    # tokens also make the batch context's counters really 1 or more (see measure_batched).
    warm_up = engine.build_prompt([Message("user", "Warm up.")])
    engine.generate_batch([(warm_up, GenerationOptions(max_tokens=2))], ignore_eos=True)
    return engine, time.perf_counter() - started


def _evaluated_by_llama(perf: Any) -> int:
    # llama.cpp books a decode call by its token count: one token in n_eval, more in n_p_eval (so a batched step
    # of several sequences counts as prompt). Their sum is every token it evaluated. It reports each counter as
    # at least 1, so a counter that is really 0 reads 1: callers take only counts that are really 1 or more.
    return int(perf.n_p_eval) + int(perf.n_eval)


def _variant_figures(
    jobs: list[DocumentJob], completions: list[Completion], evaluated: int, wall_s: float
) -> dict[str, Any]:
    """One variant's counts and times. Prompt tokens by llama.cpp's counters are all it evaluated less the decode
    steps (one per generated token but the last, whose logits are never needed); prompt seconds are the time
    spent evaluating prompts, decode seconds the rest of the wall time."""
    decode_steps = sum(max(completion.completion_tokens - 1, 0) for completion in completions)
    prompt_s = sum(completion.prompt_ms for completion in completions) / 1000.0
    return {
        "requests": len(jobs),
        "prompt_tokens": sum(len(prompt.tokens) for prompt, _ in jobs),
        "prompt_eval_tokens_llama": evaluated - decode_steps,
        "prompt_eval_tokens_engine": sum(completion.prompt_eval_tokens for completion in completions),
        "llama_evaluated_tokens": evaluated,
        "decode_tokens": sum(completion.completion_tokens for completion in completions),
        "decode_steps": decode_steps,
        "prompt_s": round(prompt_s, 3),
        "decode_s": round(wall_s - prompt_s, 3),
        "wall_s": round(wall_s, 3),
        "finish_reasons": sorted({completion.finish_reason for completion in completions}),
        "per_request": [
            {
                "prompt_tokens": completion.prompt_tokens,
                "prompt_eval_tokens": completion.prompt_eval_tokens,
                "completion_tokens": completion.completion_tokens,
                "prompt_ms": completion.prompt_ms,
                "total_ms": completion.total_ms,
            }
            for completion in completions
        ],
    }


def measure_one_at_a_time(engine: Engine, jobs: list[DocumentJob], keep_prefix: bool) -> dict[str, Any]:
    """The single path (engine.generate), one request after another. With ``keep_prefix`` the KV cache keeps the
    previous prompt for the engine's prefix reuse; without, it is cleared before each request, as a fresh
    invocation (or an instruction-first prompt) has it. The first request starts from an empty cache either way."""
    completions: list[Completion] = []
    evaluated = 0
    started = time.perf_counter()
    for index, (prompt, options) in enumerate(jobs):
        if index == 0 or not keep_prefix:
            engine.clear_cache()
        completions.append(engine.generate(prompt, options, ignore_eos=True))
        # generate resets the main context's counters when it starts: these are this request's alone, each
        # really 1 or more (a prompt part of several tokens, and max_tokens - 1 decode steps with max_tokens >= 2).
        evaluated += _evaluated_by_llama(engine._lib.llama_perf_context(engine._ctx))
    return _variant_figures(jobs, completions, evaluated, time.perf_counter() - started)


def measure_batched(engine: Engine, jobs: list[DocumentJob], share_prefixes: bool) -> dict[str, Any]:
    """All requests through engine.generate_batch (BATCH_PARALLEL at a time), llama.cpp's counters of its context."""
    # The context these requests are decoded in (a unified KV cache when they share a prefix, else one split by
    # sequence), warmed up like the engine's first one if it is new here.
    from handler.formats.prompts import Message

    unified = engine.unified_for(jobs)
    if unified != engine._batch_unified:
        warm_up = engine.build_prompt([Message("user", "Warm up.")])
        engine.generate_batch([(warm_up, GenerationOptions(max_tokens=2))], ignore_eos=True, unified=unified)
    context, _ = engine._batch_context(unified)
    # Running totals, not a reset: steps of several sequences may leave n_eval really 0, which would read 1. The
    # warm-up (a prompt, then one single-token step) has made both totals really 1 or more, so the difference is exact.
    before = _evaluated_by_llama(engine._lib.llama_perf_context(context))
    started = time.perf_counter()
    results = engine.generate_batch(jobs, ignore_eos=True, share_prefixes=share_prefixes)
    wall_s = time.perf_counter() - started
    completions = [completion for completion in results if completion is not None]
    if len(completions) != len(jobs):
        raise RuntimeError(f"{len(jobs) - len(completions)} of {len(jobs)} batched requests did not finish")
    evaluated = _evaluated_by_llama(engine._lib.llama_perf_context(context)) - before
    return _variant_figures(jobs, completions, evaluated, wall_s)


def _engine_fields(engine: Engine, load_s: float) -> dict[str, Any]:
    return {
        "load_s": round(load_s, 3),
        "threads": engine.n_threads,
        "threads_batch": engine._llama.n_threads_batch,
        "n_ctx": engine.n_ctx,
        "parallel": engine.parallel,
        "batch_n_ctx": engine.batch_n_ctx,
        "type_k": engine.kv_cache_type_k,
    }


def child_document_tasks(spec: dict[str, Any]) -> dict[str, Any]:
    """Four tasks over one text, every variant in turn in one engine: separate, one after another, batched."""
    from handler.formats.prompts import build_messages
    from handler.formats.schemas import parse_request

    engine, load_s = _documents_engine(spec)
    requests = [parse_request(request) for request in spec["requests"]]
    jobs = [(engine.build_prompt(build_messages(request)), request.options) for request in requests]
    measure: dict[str, Callable[[], dict[str, Any]]] = {
        "separate": lambda: measure_one_at_a_time(engine, jobs, keep_prefix=False),
        "one_after_another": lambda: measure_one_at_a_time(engine, jobs, keep_prefix=True),
        "batched_shared": lambda: measure_batched(engine, jobs, share_prefixes=True),
        "batched_unshared": lambda: measure_batched(engine, jobs, share_prefixes=False),
    }
    variants = {}
    for name in spec["variants"]:
        print(f"{name} ...", flush=True)  # to the child's log: where a long run is
        variants[name] = measure[name]()
    return {**_engine_fields(engine, load_s), "order": spec["variants"], "variants": variants}


def child_document_chunks(spec: dict[str, Any]) -> dict[str, Any]:
    """A long text's map step: its chunk requests (handler.usecases.plan.split) one at a time, and batched."""
    from handler.formats.prompts import build_messages
    from handler.formats.schemas import parse_request
    from handler.usecases.plan import split

    engine, load_s = _documents_engine(spec)
    request = parse_request(spec["request"])
    if not isinstance(request, SummarizeRequest):
        raise TypeError(f"expected a summarize request, got {type(request).__name__}")
    parts = split(engine, request, request.text)
    jobs = [(engine.build_prompt(build_messages(part)), part.options) for part in parts]
    measure: dict[str, Callable[[], dict[str, Any]]] = {
        # The single path as the service has it: its prefix reuse stays on, though chunks share only the template.
        "one_at_a_time": lambda: measure_one_at_a_time(engine, jobs, keep_prefix=True),
        "batched": lambda: measure_batched(engine, jobs, share_prefixes=True),
    }
    variants = {}
    for name in spec["variants"]:
        print(f"{name} ...", flush=True)
        variants[name] = measure[name]()
    return {**_engine_fields(engine, load_s), "chunks": len(jobs), "order": spec["variants"], "variants": variants}
