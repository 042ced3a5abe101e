"""The measurements, each in a child process: the seed's code, the engine, raw llama_decode, batching, bandwidth,
and the documents benchmark's variants (four tasks over one text, a long text's map step)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from handler.core.settings import settings_from
from handler.domain.requests import GenerationOptions, SummarizeRequest
from handler.engine import (
    Completion,
    Engine,
    PromptTokens,
    ggml_type,
    ggml_type_name,
    peak_rss_mb,
)
from scripts.bench.configs import BANDWIDTH_GIB, BANDWIDTH_RUNS, SEED_N_CTX, SEED_STOP, quiet_llama_logs

#: A document request as the engine takes it: its prompt and its options.
DocumentJob = tuple[PromptTokens, GenerationOptions]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def child_seed(spec: dict[str, Any]) -> dict[str, Any]:
    """(a) The first seed's code, library defaults, EOG suppressed by a logits processor."""
    import llama_cpp

    started = time.perf_counter()
    llm = llama_cpp.Llama(spec["model"], n_ctx=SEED_N_CTX, seed=0)
    load_s = time.perf_counter() - started
    vocab = llm._model.vocab
    eog = np.array([t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)])

    def suppress_eog(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores[eog] = -np.inf
        return scores

    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    started = time.perf_counter()
    answer = llm(
        spec["prompt"],
        max_tokens=spec["max_tokens"],
        stop=SEED_STOP,
        echo=False,
        logits_processor=llama_cpp.LogitsProcessorList([suppress_eog]),
    )
    if not isinstance(answer, dict):  # a stream only when stream=True
        raise TypeError("expected one completion, got a stream")
    total_ms = (time.perf_counter() - started) * 1000.0
    perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
    # The same call once more from an empty cache (reset drops llama-cpp-python's prefix match): a second
    # sample of the prompt speed, as a warm execution environment's next request would see it.
    llm.reset()  # type: ignore[no-untyped-call]  # llama-cpp-python leaves it unannotated
    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    llm(spec["prompt"], max_tokens=1, stop=SEED_STOP, echo=False)
    repeat = llama_cpp.llama_perf_context(llm._ctx.ctx)
    return {
        "repeat_prompt_eval_tokens": int(repeat.n_p_eval),
        "repeat_prompt_ms": repeat.t_p_eval_ms,
        "threads": llm.n_threads,
        "threads_batch": llm.n_threads_batch,
        "prompt_tokens": answer["usage"]["prompt_tokens"],
        "prompt_eval_tokens": int(perf.n_p_eval),
        "prompt_ms": perf.t_p_eval_ms,
        "decode_tokens": answer["usage"]["completion_tokens"],
        "eval_runs": int(perf.n_eval),
        "eval_ms": perf.t_eval_ms,
        "total_ms": total_ms,
        "load_s": load_s,
        "finish_reason": answer["choices"][0]["finish_reason"],
        "text_head": answer["choices"][0]["text"][:120],
        "eog_suppressed": len(eog),
        "type_k": ggml_type_name(llm.context_params.type_k),
    }


def child_engine(spec: dict[str, Any]) -> dict[str, Any]:
    """(b) This project's engine, the service's summarize prompt, EOG suppressed by ``ignore_eos``."""
    from handler.engine import load_engine
    from handler.formats.prompts import build_messages

    # Drafting off: random weights write no text, so what drafts would win here says nothing (bench --drafting
    # measures it on real text); (b) stays one step per token, like (c).
    environ = {"MODEL_PATH": spec["model"], "KV_CACHE_TYPE_K": spec["type_k"], "SPEC_DRAFT_MAX": "0"}
    if spec["threads"]:
        environ["N_THREADS"] = str(spec["threads"])
    environ.update(spec.get("environ", {}))  # the sweep's setting under test
    started = time.perf_counter()
    engine = load_engine(settings_from(environ))
    load_s = time.perf_counter() - started
    options = GenerationOptions(max_tokens=spec["max_tokens"])
    request = SummarizeRequest(task="summarize", text=spec["text"], style="bullets")
    prompt = engine.build_prompt(build_messages(request))
    completion = engine.generate(prompt, options, ignore_eos=True)
    # The same prompt once more from an empty cache: a second sample of the prompt speed, as in (a).
    engine.clear_cache()
    repeat = engine.generate(prompt, GenerationOptions(max_tokens=1), ignore_eos=True)
    extra: dict[str, Any] = {
        "repeat_prompt_eval_tokens": repeat.prompt_eval_tokens,
        "repeat_prompt_ms": repeat.prompt_ms,
    }
    if spec.get("second_text"):
        # A warm environment's next request: same instruction, other text; the KV cache keeps the prefix.
        again = SummarizeRequest(task="summarize", text=spec["second_text"], style="bullets")
        second = engine.generate(engine.build_prompt(build_messages(again)), options, ignore_eos=True)
        extra.update(
            second_prompt_tokens=second.prompt_tokens,
            second_prompt_eval_tokens=second.prompt_eval_tokens,
            second_prompt_ms=second.prompt_ms,
        )
    return {
        **extra,
        "threads": engine.n_threads,
        "threads_batch": engine.model.llama.n_threads_batch,
        "prompt_tokens": completion.prompt_tokens,
        "prompt_eval_tokens": completion.prompt_eval_tokens,
        "prompt_ms": completion.prompt_ms,
        "decode_tokens": completion.completion_tokens,
        "eval_runs": completion.eval_runs,
        "eval_ms": completion.eval_ms,
        "total_ms": completion.total_ms,
        "load_s": load_s,
        "engine_load_ms": engine.load_ms,
        "finish_reason": completion.finish_reason,
        "text_head": completion.text[:120],
        "type_k": engine.model.kv_cache_type_k,
    }


def raw_context(spec: dict[str, Any], n_ctx: int, n_seq_max: int) -> tuple[Any, Any, float]:
    """Model and context through the C API, with the engine's settings (flash attention off, its K cache and mmap)."""
    import llama_cpp

    quiet_llama_logs()
    llama_cpp.llama_backend_init()
    started = time.perf_counter()
    model_params = llama_cpp.llama_model_default_params()
    # llama.cpp's model parameters name the loading mode; Llama(use_mmap=...) sets the same field.
    model_params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if spec["use_mmap"] else llama_cpp.LLAMA_LOAD_MODE_NONE
    model = llama_cpp.llama_model_load_from_file(spec["model"].encode(), model_params)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = 512
    params.n_ubatch = 512
    params.n_seq_max = n_seq_max
    params.kv_unified = True  # sequences share the prompt's cells
    params.n_threads = spec["threads"]
    params.n_threads_batch = spec["threads"]
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.type_k = ggml_type(spec["type_k"])
    params.no_perf = False
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not model or not ctx:
        raise RuntimeError("llama.cpp could not load the model or create the context")
    return model, ctx, time.perf_counter() - started


def eval_prompt(ctx: Any, tokens: list[int]) -> None:
    import llama_cpp

    for start in range(0, len(tokens), 512):
        chunk = tokens[start : start + 512]
        array = (llama_cpp.llama_token * len(chunk))(*chunk)
        if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(chunk))) != 0:
            raise RuntimeError("llama_decode failed on the prompt")


def _greedy() -> Any:
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    return chain


def child_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """(c) Raw llama_decode, one token per step, greedy in C, EOG never checked."""
    import llama_cpp

    _, ctx, load_s = raw_context(spec, SEED_N_CTX, 1)
    sampler = _greedy()
    tokens: list[int] = spec["tokens"]
    llama_cpp.llama_perf_context_reset(ctx)
    started = time.perf_counter()
    eval_prompt(ctx, tokens)
    decode_started = time.perf_counter()
    one = (llama_cpp.llama_token * 1)()
    step = llama_cpp.llama_batch_get_one(one, 1)
    generated = 0
    while True:
        one[0] = llama_cpp.llama_sampler_sample(sampler, ctx, -1)
        generated += 1
        if generated == spec["max_tokens"]:
            break
        if llama_cpp.llama_decode(ctx, step) != 0:
            raise RuntimeError("llama_decode failed while decoding")
    finished = time.perf_counter()
    perf = llama_cpp.llama_perf_context(ctx)
    extra: dict[str, Any] = {}
    if spec.get("repeat_prompt", True):
        # The prompt once more from an empty cache: a second sample of the prompt speed, as in (a) and (b).
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        llama_cpp.llama_perf_context_reset(ctx)
        eval_prompt(ctx, tokens)
        llama_cpp.llama_synchronize(ctx)
        repeat = llama_cpp.llama_perf_context(ctx)
        extra.update(repeat_prompt_eval_tokens=int(repeat.n_p_eval), repeat_prompt_ms=repeat.t_p_eval_ms)
    return {
        **extra,
        "threads": spec["threads"],
        "threads_batch": spec["threads"],
        "prompt_tokens": len(tokens),
        "prompt_eval_tokens": int(perf.n_p_eval),
        "prompt_ms": perf.t_p_eval_ms,
        "decode_tokens": generated,
        "eval_runs": int(perf.n_eval),
        "eval_ms": perf.t_eval_ms,
        "total_ms": (finished - started) * 1000.0,
        "decode_wall_ms": (finished - decode_started) * 1000.0,
        "load_s": load_s,
        "finish_reason": "length",
        "type_k": spec["type_k"],
    }


def child_batched(spec: dict[str, Any]) -> dict[str, Any]:
    """(e) K sequences per step: the prompt evaluated once, copied to each sequence, then one token each per step."""
    import llama_cpp

    tokens: list[int] = spec["tokens"]
    n_prompt, steps, k_max = len(tokens), spec["max_tokens"], max(spec["batch_sizes"])
    n_ctx = -(-(n_prompt + k_max * steps + 1) // 256) * 256
    _, ctx, load_s = raw_context(spec, n_ctx, k_max)
    memory = llama_cpp.llama_get_memory(ctx)
    sampler = _greedy()
    llama_cpp.llama_perf_context_reset(ctx)
    eval_prompt(ctx, tokens)
    first = llama_cpp.llama_sampler_sample(sampler, ctx, -1)
    perf = llama_cpp.llama_perf_context(ctx)  # after a sample: llama.cpp books timings when it synchronizes
    batch = llama_cpp.llama_batch_init(k_max, 0, 1)
    results = []
    for k in spec["batch_sizes"]:
        for seq in range(1, k):
            llama_cpp.llama_memory_seq_cp(memory, 0, seq, -1, -1)
        current = [first] * k
        started = time.perf_counter()
        for step in range(steps - 1):  # the first token came from the prompt, as in (c)
            for i in range(k):
                batch.token[i] = current[i]
                batch.pos[i] = n_prompt + step
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = i
                batch.logits[i] = 1
            batch.n_tokens = k
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError(f"llama_decode failed with {k} sequences")
            current = [llama_cpp.llama_sampler_sample(sampler, ctx, i) for i in range(k)]
        elapsed = time.perf_counter() - started
        for seq in range(k):
            llama_cpp.llama_memory_seq_rm(memory, seq, n_prompt if seq == 0 else -1, -1)
        aggregate = k * (steps - 1) / elapsed
        results.append(
            {
                "k": k,
                "decode_tokens_per_seq": steps,
                "decode_steps": steps - 1,
                "decode_wall_ms": elapsed * 1000.0,
                "aggregate_tokens_per_s": round(aggregate, 3),
                "per_seq_tokens_per_s": round(aggregate / k, 3),
                "peak_rss_mb_after": peak_rss_mb(),
            }
        )
    llama_cpp.llama_batch_free(batch)
    return {
        "threads": spec["threads"],
        "threads_batch": spec["threads"],
        "n_ctx": n_ctx,
        "prompt_tokens": n_prompt,
        "prompt_eval_tokens": int(perf.n_p_eval),
        "prompt_ms": perf.t_p_eval_ms,
        "decode_tokens": steps,
        "load_s": load_s,
        "by_k": results,
        "type_k": spec["type_k"],
    }


def _read_kernels() -> dict[str, Callable[[np.ndarray], Any]]:
    # A float32 sum is compute bound at about 19 GB/s per core here (pairwise summation); max and OR
    # keep up with memory, so the best of them is the bandwidth. All single-threaded (no BLAS).
    return {
        "sum_f32": np.sum,
        "max_f32": np.max,
        "or_u64": lambda part: np.bitwise_or.reduce(part.view(np.uint64)),
    }


def child_bandwidth(spec: dict[str, Any]) -> dict[str, Any]:
    """(d) Read bandwidth: numpy reductions over a large array split over threads (they release the GIL), best of N."""
    data = np.ones(int(BANDWIDTH_GIB * 2**30) // 4, dtype=np.float32)  # ones: real pages, not the zero page
    by_kernel: dict[str, dict[str, float]] = {}
    with ThreadPoolExecutor(spec["threads"]) as pool:
        for kernel_name, kernel in _read_kernels().items():
            by_kernel[kernel_name] = {}
            for n_threads in sorted({1, spec["threads"]}):
                parts = np.array_split(data, n_threads)
                best = float("inf")
                for _ in range(BANDWIDTH_RUNS):
                    started = time.perf_counter()
                    list(pool.map(kernel, parts))
                    best = min(best, time.perf_counter() - started)
                by_kernel[kernel_name][str(n_threads)] = round(data.nbytes / best / 1e9, 3)
    best_by_threads = {
        threads: max(measured[threads] for measured in by_kernel.values()) for threads in by_kernel["sum_f32"]
    }
    return {
        "threads": spec["threads"],
        "bytes": data.nbytes,
        "runs": BANDWIDTH_RUNS,
        "gb_per_s_by_kernel": by_kernel,
        "gb_per_s_by_threads": best_by_threads,
    }


# --- the documents benchmark's variants (documents.py runs them) ---------------------------------------------


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
        evaluated += _evaluated_by_llama(engine.model.lib.llama_perf_context(engine.model.ctx))
    return _variant_figures(jobs, completions, evaluated, time.perf_counter() - started)


def measure_batched(engine: Engine, jobs: list[DocumentJob], share_prefixes: bool) -> dict[str, Any]:
    """All requests through engine.generate_batch (BATCH_PARALLEL at a time), llama.cpp's counters of its context."""
    # The context these requests are decoded in (a unified KV cache when they share a prefix, else one split by
    # sequence), warmed up like the engine's first one if it is new here.
    from handler.formats.prompts import Message

    unified = engine.unified_for(jobs)
    if unified != engine.batch_decoder.unified:
        warm_up = engine.build_prompt([Message("user", "Warm up.")])
        engine.generate_batch([(warm_up, GenerationOptions(max_tokens=2))], ignore_eos=True, unified=unified)
    context, _ = engine.batch_decoder.context(unified)
    # Running totals, not a reset: steps of several sequences may leave n_eval really 0, which would read 1. The
    # warm-up (a prompt, then one single-token step) has made both totals really 1 or more, so the difference is exact.
    before = _evaluated_by_llama(engine.model.lib.llama_perf_context(context))
    started = time.perf_counter()
    results = engine.generate_batch(jobs, ignore_eos=True, share_prefixes=share_prefixes)
    wall_s = time.perf_counter() - started
    completions = [completion for completion in results if completion is not None]
    if len(completions) != len(jobs):
        raise RuntimeError(f"{len(jobs) - len(completions)} of {len(jobs)} batched requests did not finish")
    evaluated = _evaluated_by_llama(engine.model.lib.llama_perf_context(context)) - before
    return _variant_figures(jobs, completions, evaluated, wall_s)


def _engine_fields(engine: Engine, load_s: float) -> dict[str, Any]:
    return {
        "load_s": round(load_s, 3),
        "threads": engine.n_threads,
        "threads_batch": engine.model.llama.n_threads_batch,
        "n_ctx": engine.n_ctx,
        "parallel": engine.parallel,
        "batch_n_ctx": engine.batch_decoder.n_ctx,
        "type_k": engine.model.kv_cache_type_k,
    }


def child_document_tasks(spec: dict[str, Any]) -> dict[str, Any]:
    """Four tasks over one text, every variant in turn in one engine: separate, one after another, batched."""
    from handler.domain.requests import parse_request
    from handler.formats.prompts import build_messages

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
    """A long text's map step: its chunk requests (handler.usecases.preparation.split) one at a time, and batched."""
    from handler.domain.requests import parse_request
    from handler.formats.prompts import build_messages
    from handler.usecases.preparation import split

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
