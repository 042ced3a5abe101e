"""Decode-speed benchmark on a Phi-3-mini-shaped model with random weights.

The model has Phi-3-mini's shapes and the default model's quantization: generated once in F16 and
quantized by llama.cpp's own quantizer to Q4_K_M, so its tensors have the types llama.cpp chooses
for the real model (Q4_K, Q6_K for the output and some layers' QKV and FFN-down matrices).

One run, on the same inputs (the first seed's summarize request, about 368 prompt tokens, and a
2,000-token input in the full run), each configuration in a fresh subprocess:

  a  the first seed's code: ``Llama(model_path, n_ctx=4096, seed=0)`` with library defaults
  b  this project's engine (``load_engine``, ``build_prompt``, ``generate``)
  c  raw ``llama_decode``: one token per step, greedy in llama.cpp's sampler, no Python in between
  d  the roofline: this machine's read bandwidth over the bytes read per decoded token
  e  batched decoding: K = 1, 2, 4, 8 sequences per ``llama_decode`` step in one context

All of them run the shipped build of llama.cpp (``layers/build/cmake-<arch>.args``, AVX2 on
x86_64). On an x86_64 host with AVX-512, (b) and (c) also run with the AVX-512 build
(``layers/build/cmake-amd64-avx512.args``, loaded through ``LLAMA_CPP_LIB_PATH``) in the same
repetitions: (b') and (c'), whose speeds over (b)'s and (c)'s decide whether an AVX-512 build is
worth shipping beside the AVX2 one. Every child records the build it loaded (llama.cpp's system
info and the library files mapped).

End-of-generation tokens are suppressed everywhere, so every configuration generates exactly
``max_tokens`` tokens on random weights. Prints a table and ratios; writes ``bench.json`` (all raw
numbers and the machine) and ``decode_vs_k.png`` to the output folder.

``--documents`` measures instead what text-first prompts and batched decoding give documents, in one
engine per comparison (one child process, its variants back to back): (a) one text of 2,000 tokens x 4
tasks as separate requests (an empty KV cache each), one after another (the engine's prefix reuse) and
batched with the text's prefix shared (``--unshared-batch``: also batched without sharing); (b) a
12,000-token text's map step, its chunk requests (``handler.documents.split``) one at a time and batched.
Both count prompt tokens evaluated by llama.cpp's counters and by the engine's completions, and time
them; texts are cut from ``tests/data/moby-dick-chapters-1-9.txt``. Writes ``documents.json``.

Usage: ``python scripts/bench.py [--quick] [--model PATH] [--out-dir bench-results] [--threads N]
[--no-compare-builds]``; ``python scripts/bench.py --documents [--quick] [--text-tokens N]
[--document-tokens N] [--doc-max-tokens N] [--unshared-batch] [--repeats N]``
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from handler.config import Settings, available_cpus, settings_from
from handler.engine import (
    Completion,
    Engine,
    PromptTokens,
    ggml_type,
    ggml_type_name,
    kv_cache_type_k,
    peak_rss_mb,
)
from handler.files import file_sha256
from handler.schemas import GenerationOptions, SummarizeRequest

ROOT = Path(__file__).resolve().parent.parent


DEFAULT_MODEL = Path("models/bench/phi3-mini-random-q4_k_m.gguf")
PRESET = "phi3-mini"
QUANTIZATION = "Q4_K_M"  # the default model's (layers/models/phi-3-mini-4k-instruct-q4.json)
# The first seed's request: its instruction, prompt format, stop string and context size.
SEED_INSTRUCTION = "Summarize the following sentences with bullet points:\n\n"
SEED_STOP = ["<|end|>"]
SEED_N_CTX = 4096
SEED_PROMPT_TOKENS = 368  # the seed's summarize prompt, counted by the real Phi-3 tokenizer
LONG_PROMPT_TOKENS = 2000
BATCH_SIZES = (1, 2, 4, 8)
BANDWIDTH_GIB = 1.5
BANDWIDTH_RUNS = 5
CHILD_TIMEOUT_S = 3600
DISTURBED_SHARE = 0.05  # other processes' share of all CPUs above which a run is flagged
# The comparison build: its flags file and where its shared libraries are unpacked (git-ignored).
COMPARE_FLAGS = ROOT / "layers" / "build" / "cmake-amd64-avx512.args"
COMPARE_LIB_DIR = ROOT / "build" / "llama-avx512"
COMPARE_BUILD = "avx512"
# The CPU flags (/proc/cpuinfo) each ON option of the flags file compiles in (ggml-cpu's CMakeLists).
CPU_FLAGS_OF_OPTION = {
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}
# Configurations that run again with the comparison build, and their table labels.
COMPARED = {"b": "b' engine", "c": "c' raw llama_decode"}
DISPATCH_GAIN = 1.15  # the comparison build's speed over the shipped one's that is worth a second build
# Repetitions of the quick run that run (b') and (c') too: on this model a repetition of (a), (b), (c)
# takes about two minutes on 2 cores already, and (b') and (c') add one more; the full run has them in all.
QUICK_COMPARE_REPEATS = 1


def seed_prompt(content: str) -> str:
    """The first seed's prompt string around a user message."""
    return f"<|user|>\n{content}<|end|>\n<|assistant|>"


def _per_s(count: float, ms: float) -> float:
    return round(count * 1000.0 / ms, 3) if ms > 0 else 0.0


def _quiet_llama_logs() -> None:
    # llama-cpp-python forwards llama.cpp's log to this logger, which prints everything until told otherwise.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


# -- the model ----------------------------------------------------------------------------------


def ensure_model(path: Path) -> dict[str, Any]:
    """Generate the model once, and its sidecar.

    make_test_model writes the F16 model and the quantized one under temporary names and renames
    the quantized file into place when complete: an interrupted run leaves no half file at ``path``.
    """
    info: dict[str, Any] = {"path": str(path), "preset": PRESET, "quantization": QUANTIZATION, "generated_now": False}
    if not path.is_file():
        import make_test_model

        for suffix in (".f16.partial", ".partial"):  # left by an interrupted generation
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        print(
            f"generating {path} once: preset {PRESET} in F16 (7.6 GB, deleted afterwards), quantized to "
            f"{QUANTIZATION} by llama.cpp's quantizer ...",
            flush=True,
        )
        timings = make_test_model.make_quantized_model(path, PRESET, QUANTIZATION)
        print(f"generated in {timings['generation_s']:.0f} s, quantized in {timings['quantization_s']:.0f} s")
        info.update(generated_now=True, **timings)
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file() or sidecar.stat().st_mtime < path.stat().st_mtime:
        # The engine reads the hash from the sidecar; without it its load would include hashing 2 GB.
        sidecar.write_text(f"{file_sha256(path)}  {path.name}\n", encoding="utf-8")
    info["sha256"] = sidecar.read_text(encoding="utf-8").split()[0]
    info["bytes"] = path.stat().st_size
    return info


def tensor_bytes(type_name: str, shape: list[int]) -> int:
    """Bytes of a tensor of this ggml type and shape (ggml order: row length first), from its block size."""
    import gguf

    block_size, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    row_length = shape[0]
    if row_length % block_size:
        raise ValueError(f"a row of {row_length} values is not whole {type_name} blocks of {block_size}")
    return int(np.prod(shape[1:], dtype=np.int64)) * (row_length // block_size) * type_size


def model_layout(path: Path) -> dict[str, Any]:
    """Tensor types and bytes from the GGUF header: what one decoded token reads, and KV bytes per position.

    Bytes come from each tensor's own type (Q4_K_M mixes Q4_K, Q6_K and more, chosen per tensor by
    llama.cpp's quantizer) and shape; token_embd is only gathered, one row per token.
    """
    import gguf

    reader = gguf.GGUFReader(path)

    def field(key: str) -> int:
        value = reader.fields[key]
        return int(value.parts[value.data[0]][0])

    arch = "phi3"
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    n_layer = field(f"{arch}.block_count")
    n_embd = field(f"{arch}.embedding_length")
    n_head = field(f"{arch}.attention.head_count")
    n_head_kv = field(f"{arch}.attention.head_count_kv")
    file_type = gguf.LlamaFileType(field("general.file_type")).name.removeprefix("MOSTLY_")
    tensors: dict[str, tuple[str, list[int]]] = {
        t.name: (t.tensor_type.name, [int(n) for n in t.shape]) for t in reader.tensors
    }
    sizes = {name: tensor_bytes(type_name, shape) for name, (type_name, shape) in tensors.items()}
    total = sum(sizes.values())
    types: dict[str, int] = {}
    counts: dict[str, int] = {}
    # Each kind of matrix (attn_qkv, ffn_down, ...) by type: which layers llama.cpp gave more bits.
    kinds: dict[str, dict[str, int]] = {}
    for name, (type_name, _) in tensors.items():
        types[type_name] = types.get(type_name, 0) + sizes[name]
        counts[type_name] = counts.get(type_name, 0) + 1
        kind = name.split(".")[-2] if name.startswith("blk.") else name.removesuffix(".weight")
        by_type = kinds.setdefault(kind, {})
        by_type[type_name] = by_type.get(type_name, 0) + 1
    embd_type, embd_shape = tensors["token_embd.weight"]
    embd_row_bytes = tensor_bytes(embd_type, embd_shape[:1])
    return {
        "n_vocab": n_vocab,
        "n_layer": n_layer,
        "n_embd": n_embd,
        "n_head": n_head,
        "n_head_kv": n_head_kv,
        "file_type": file_type,
        "tensor_bytes": total,
        "bytes_by_type": types,
        "tensors_by_type": counts,
        "types_by_kind": kinds,
        "output_type": tensors["output.weight"][0],
        "token_embd_type": embd_type,
        "weight_bytes_per_token": total - sizes["token_embd.weight"] + embd_row_bytes,
        # K and V values per context position, all layers (Phi-3-mini has no GQA).
        "kv_values_per_position": n_layer * (n_embd // n_head * n_head_kv),
    }


# Bytes per value of the K cache types (q8_0: 32 int8 values and an f16 scale per block); V stays f16.
KV_BYTES_PER_VALUE = {"f16": 2.0, "q8_0": 34 / 32}


def kv_bytes_per_position(layout: dict[str, Any], type_k: str) -> int:
    """K and V cache bytes one context position adds to what each decoded token reads."""
    return int(layout["kv_values_per_position"] * (KV_BYTES_PER_VALUE[type_k] + KV_BYTES_PER_VALUE["f16"]))


def make_tokenizer(path: Path) -> Callable[[str], list[int]]:
    """The model's tokenizer as the seed's code uses it (BOS added, special tokens parsed)."""
    import llama_cpp

    _quiet_llama_logs()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise SystemExit(f"error: llama.cpp cannot load {path}")
    vocab = llama_cpp.llama_model_get_vocab(model)

    def tokenize(text: str) -> list[int]:
        data = text.encode("utf-8")
        buffer = (llama_cpp.llama_token * (len(data) + 8))()
        count = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, len(buffer), True, True)
        return list(buffer[:count])

    return tokenize


def fit_text(text: str, target: int, count: Callable[[str], int]) -> str:
    """The text's words (repeated if short, cut if long) whose seed prompt comes closest to ``target`` tokens."""
    words = text.split()
    while count(" ".join(words)) < target:
        words += text.split()
    low, high = 1, len(words)  # the largest prefix whose prompt is at most the target
    while low < high:
        middle = (low + high + 1) // 2
        if count(" ".join(words[:middle])) <= target:
            low = middle
        else:
            high = middle - 1
    below, above = " ".join(words[:low]), " ".join(words[: low + 1])
    return above if abs(count(above) - target) < abs(count(below) - target) else below


def build_inputs(model: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """The event's text fitted to the seed prompt's 368 tokens (and, in the full run, to 2,000 tokens)."""
    tokenize = make_tokenizer(model)
    event = json.loads((ROOT / "events" / "summarize.json").read_text(encoding="utf-8"))

    def count(text: str) -> int:
        return len(tokenize(seed_prompt(SEED_INSTRUCTION + text)))

    targets = (
        {"summarize": SEED_PROMPT_TOKENS} if quick else {"summarize": SEED_PROMPT_TOKENS, "long": LONG_PROMPT_TOKENS}
    )
    inputs: dict[str, dict[str, Any]] = {}
    for name, target in targets.items():
        text = fit_text(event["text"], target, count)
        prompt = seed_prompt(SEED_INSTRUCTION + text)
        tokens = tokenize(prompt)
        inputs[name] = {"target_tokens": target, "text": text, "prompt": prompt, "tokens": tokens}
        print(
            f"input {name}: {len(tokens)} prompt tokens (target {target}), {len(text.split())} words, {len(text)} chars"
        )
    print(f"the event's whole text gives a {count(event['text'])}-token seed prompt with this synthetic vocabulary")
    return inputs


# -- children: one configuration each, in a fresh process ---------------------------------------


def _loadavg() -> list[float]:
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
    from handler.tasks import build_messages

    environ = {"MODEL_PATH": spec["model"], "KV_CACHE_TYPE_K": spec["type_k"]}
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
        "threads_batch": engine._llama.n_threads_batch,
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
        "type_k": engine.kv_cache_type_k,
    }


def _raw_context(spec: dict[str, Any], n_ctx: int, n_seq_max: int) -> tuple[Any, Any, float]:
    """Model and context through the C API, with the engine's settings (flash attention off, its K cache and mmap)."""
    import llama_cpp

    _quiet_llama_logs()
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


def _eval_prompt(ctx: Any, tokens: list[int]) -> None:
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

    _, ctx, load_s = _raw_context(spec, SEED_N_CTX, 1)
    sampler = _greedy()
    tokens: list[int] = spec["tokens"]
    llama_cpp.llama_perf_context_reset(ctx)
    started = time.perf_counter()
    _eval_prompt(ctx, tokens)
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
        _eval_prompt(ctx, tokens)
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
    _, ctx, load_s = _raw_context(spec, n_ctx, k_max)
    memory = llama_cpp.llama_get_memory(ctx)
    sampler = _greedy()
    llama_cpp.llama_perf_context_reset(ctx)
    _eval_prompt(ctx, tokens)
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


def compared_config(config: str) -> str:
    """The key of a configuration run with the comparison build: ``b-avx512`` (runs ``b-avx512-summarize-0``)."""
    return f"{config}-{COMPARE_BUILD}"


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "a": child_seed,
    "b": child_engine,
    "c": child_raw,
    "d": child_bandwidth,
    "e": child_batched,
    # (b) and (c) with the comparison build: the same code, other libraries (LLAMA_CPP_LIB_PATH).
    compared_config("b"): child_engine,
    compared_config("c"): child_raw,
}


def build_label(system_info: str) -> str:
    """A short name for a llama.cpp build from its system info: the widest instruction set compiled in.

    ``llama_print_system_info`` lists the CPU features the library was compiled with (``AVX2 = 1``);
    ggml's CPU backend reports compile-time flags there, not the host's.
    """
    features = {
        key.strip()
        for key, _, value in (item.partition("=") for item in system_info.split("|"))
        if value.strip() == "1"
    }
    for feature in ("AVX512", "AVX2", "AVX", "SVE", "DOTPROD", "NEON"):
        if feature in features:
            return feature.lower()
    return "generic"


def loaded_build() -> dict[str, Any]:
    """Which llama.cpp this process loaded: the library folder, the files mapped, the build's features."""
    import llama_cpp

    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    system_info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
    # The files the loader really mapped: libllama finds libggml-cpu through its RUNPATH, next to it.
    mapped = {
        line.split(maxsplit=5)[-1]
        for line in Path("/proc/self/maps").read_text(encoding="utf-8").splitlines()
        if any(f"/lib{name}" in line for name in ("llama.so", "ggml"))
    }
    return {
        "build": build_label(system_info),
        "llama_lib_path": override or str(Path(llama_cpp.__file__).resolve().parent / "lib"),
        "llama_lib_path_from": "LLAMA_CPP_LIB_PATH" if override else "package",
        "llama_system_info": system_info,
        "loaded_libraries": sorted(mapped),
    }


def run_child(spec_path: Path) -> int:
    """Child entry point: run one configuration and write its JSON next to the spec."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    result: dict[str, Any] = {"config": spec["config"], "input": spec.get("input"), "loadavg_start": _loadavg()}
    result.update(CHILDREN[spec["config"]](spec))
    result.update(peak_rss_mb=peak_rss_mb(), loadavg_end=_loadavg())
    if "llama_cpp" in sys.modules:  # not (d): no llama.cpp there
        result.update(loaded_build())
        expected = spec.get("expect_build")
        if expected and result["build"] != expected:
            raise RuntimeError(
                f"expected the {expected} build, loaded {result['build']} from {result['loaded_libraries']}: "
                f"{result['llama_system_info']}"
            )
        lib_dir = spec.get("lib_path")
        outside = [lib for lib in result["loaded_libraries"] if lib_dir and not lib.startswith(lib_dir + "/")]
        if outside:
            raise RuntimeError(f"libraries loaded from outside {lib_dir}: {outside}")
    Path(spec["result"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


def _busy_cpu_s() -> float:
    """CPU seconds all processors spent not idle since boot (/proc/stat: steal counts as busy)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(value) for value in Path("/proc/stat").read_text(encoding="utf-8").split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spawn(spec: dict[str, Any], work: Path, name: str, timeout_s: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter; its output goes to a log, its numbers come back as JSON.

    Also measures how much CPU other processes took meanwhile: llama.cpp's threads wait for each
    other at every step, so a competitor on one core slows a run on all cores many times over.
    """
    spec = {**spec, "result": str(work / f"{name}.json")}
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log_path = work / f"{name}.log"
    environ = dict(os.environ)
    if spec.get("lib_path"):
        # llama-cpp-python loads libllama from here instead of its package (libmtmd, if ever imported, too).
        environ.update(LLAMA_CPP_LIB_PATH=spec["lib_path"], MTMD_CPP_LIB=spec["lib_path"])
    print(f"  {name} ...", end="", flush=True)
    started, busy, own = time.perf_counter(), _busy_cpu_s(), _children_cpu_s()
    with log_path.open("w", encoding="utf-8") as log:
        status = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
            timeout=timeout_s,
            check=False,
        ).returncode
    wall = time.perf_counter() - started
    others = max(0.0, (_busy_cpu_s() - busy) - (_children_cpu_s() - own))
    if status != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"\nerror: configuration {name} failed (exit {status}); end of {log_path}:\n{tail}")
    result: dict[str, Any] = json.loads(Path(spec["result"]).read_text(encoding="utf-8"))
    result.update(run=name, wall_s=round(wall, 2), other_cpu_share=round(others / (wall * (os.cpu_count() or 1)), 3))
    print(f" {wall:.0f} s, other processes {result['other_cpu_share']:.0%} of the CPUs", flush=True)
    return result


# -- report --------------------------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(run[key]) for run in runs))


def speeds(run: dict[str, Any]) -> dict[str, float]:
    """One run's prompt and decode speeds."""
    return {
        # Both prompt evaluations of the run: the request's and the repeat from an empty cache.
        "prompt_tokens_per_s": _per_s(
            run["prompt_eval_tokens"] + run.get("repeat_prompt_eval_tokens", 0),
            run["prompt_ms"] + run.get("repeat_prompt_ms", 0.0),
        ),
        # llama.cpp's own eval timing: decode steps over time inside llama_decode.
        "decode_tokens_per_s": _per_s(run["eval_runs"], run["eval_ms"]),
        # End to end: the same steps over the whole generation after the prompt (sampling, Python).
        "e2e_decode_tokens_per_s": _per_s(run["eval_runs"], run["total_ms"] - run["prompt_ms"]),
    }


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repetitions of one configuration on one input, with derived speeds."""
    rows = [{**run, **speeds(run)} for run in runs]
    keys = ("prompt_tokens_per_s", "decode_tokens_per_s", "e2e_decode_tokens_per_s", "load_s", "peak_rss_mb")
    summary: dict[str, Any] = {key: round(_median(rows, key), 3) for key in keys}
    for key in ("prompt_tokens", "decode_tokens", "threads", "threads_batch", "type_k"):
        summary[key] = rows[0][key]
    summary["build"] = runs_build(rows)
    summary["repeats"] = len(rows)
    return summary


def runs_build(runs: list[dict[str, Any]]) -> str:
    """The build label of these runs (one, unless something went wrong: then all of them, joined)."""
    return "/".join(sorted({run.get("build", "-") for run in runs}))


def paired_ratios(runs: list[dict[str, Any]], name: str, numerator: str, denominator: str, key: str) -> list[float]:
    """One configuration's speed over another's in each repetition that ran both (on input ``name``)."""
    by_run = {run["run"]: run for run in runs}
    ratios = []
    for run in runs:
        if run["config"] != denominator or run["input"] != name:
            continue
        repeat = run["run"].rsplit("-", 1)[1]
        partner = by_run.get(f"{numerator}-{name}-{repeat}")
        if partner is not None and speeds(run)[key] > 0:
            ratios.append(speeds(partner)[key] / speeds(run)[key])
    return ratios


def paired_ratio(runs: list[dict[str, Any]], name: str, numerator: str, denominator: str, key: str) -> float | None:
    """Median over repetitions of one configuration's speed over another's in the same repetition.

    On a shared virtual machine the speed drifts over tens of seconds (runs a minute apart differ by
    up to 15% here) while runs of one repetition, seconds apart, drift together: a ratio within
    each repetition cancels most of the drift that a ratio of separate medians keeps.
    """
    ratios = paired_ratios(runs, name, numerator, denominator, key)
    return round(statistics.median(ratios), 3) if ratios else None


def tabulate(
    runs: list[dict[str, Any]],
    inputs: dict[str, dict[str, Any]],
    layout: dict[str, Any],
    threads: int,
    max_tokens: int,
    type_k: str,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Table rows, per-configuration medians and the batched series from the children's raw numbers."""
    bandwidth = next(run for run in runs if run["config"] == "d")
    bandwidth_gbs = float(bandwidth["gb_per_s_by_threads"][str(threads)])
    rows: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    for name, data in inputs.items():
        labels = [("a", "a seed defaults"), ("b", "b engine"), ("c", "c raw llama_decode")]
        for config in [config for config, _ in labels] + [compared_config(config) for config in COMPARED]:
            selected = [run for run in runs if run["config"] == config and run["input"] == name]
            if selected:  # the compared builds' configurations only when the build comparison ran
                summary[f"{config}-{name}"] = summarize_runs(selected)
        for config, label in labels:
            rows.append({"name": label, "input": name, **summary[f"{config}-{name}"]})
            if f"{compared_config(config)}-{name}" in summary:
                rows.append({"name": COMPARED[config], "input": name, **summary[f"{compared_config(config)}-{name}"]})
        mean_context = len(data["tokens"]) + max_tokens / 2
        bytes_per_token = layout["weight_bytes_per_token"] + kv_bytes_per_position(layout, type_k) * mean_context
        roofline = round(bandwidth_gbs * 1e9 / bytes_per_token, 3)
        summary[f"d-{name}"] = {
            "read_gb_per_s": bandwidth_gbs,
            "bytes_per_token": int(bytes_per_token),
            "mean_context": mean_context,
            "type_k": type_k,
            "decode_tokens_per_s": roofline,
        }
        rows.append(
            {
                "name": "d roofline",
                "input": name,
                "build": "-",
                "threads": threads,
                "type_k": type_k,
                "decode_tokens_per_s": roofline,
            }
        )
    batched_runs = [run for run in runs if run["config"] == "e"]
    batched: list[dict[str, Any]] = []
    for k in BATCH_SIZES:
        entries = [entry for run in batched_runs for entry in run["by_k"] if entry["k"] == k]
        aggregate = round(statistics.median(entry["aggregate_tokens_per_s"] for entry in entries), 3)
        batched.append({"k": k, "aggregate_tokens_per_s": aggregate, "per_seq_tokens_per_s": round(aggregate / k, 3)})
        rows.append(
            {
                "name": f"e batched K={k}",
                "input": "summarize",
                "build": runs_build(batched_runs),
                "threads": threads,
                "type_k": batched_runs[0]["type_k"],
                "prompt_tokens": batched_runs[0]["prompt_tokens"],
                "prompt_tokens_per_s": _per_s(batched_runs[0]["prompt_eval_tokens"], batched_runs[0]["prompt_ms"])
                if k == 1
                else None,
                "decode_tokens": f"{k}x{max_tokens}",
                # Wall clock over the decode loop, sampling included: end to end as well.
                "decode_tokens_per_s": aggregate,
                "e2e_decode_tokens_per_s": aggregate,
                "per_seq_tokens_per_s": round(aggregate / k, 3),
                "load_s": round(statistics.median(run["load_s"] for run in batched_runs), 3) if k == 1 else None,
                "peak_rss_mb": max(entry["peak_rss_mb_after"] for entry in entries),
            }
        )
    summary["e-summarize"] = {"by_k": batched}
    return rows, summary, batched


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    """One aligned table of every configuration."""
    columns = [
        ("configuration", "name"),
        ("input", "input"),
        ("build", "build"),
        ("threads", "threads"),
        ("K cache", "type_k"),
        ("prompt tok", "prompt_tokens"),
        ("prompt tok/s", "prompt_tokens_per_s"),
        ("decode tok", "decode_tokens"),
        ("decode tok/s", "decode_tokens_per_s"),
        ("e2e tok/s", "e2e_decode_tokens_per_s"),
        ("per seq tok/s", "per_seq_tokens_per_s"),
        ("load s", "load_s"),
        ("peak RSS MB", "peak_rss_mb"),
    ]
    print_aligned([title for title, _ in columns], [[_cell(row.get(key)) for _, key in columns] for row in rows], 3)


def print_aligned(header: list[str], lines: list[list[str]], text_columns: int) -> None:
    """A header, a rule and the lines; the first ``text_columns`` columns left-aligned, numbers right-aligned."""
    cells = [header, *lines]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    for index, line in enumerate(cells):
        print(
            "  ".join(
                cell.ljust(width) if i < text_columns else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


def plot(
    batched: list[dict[str, Any]], ceiling: float | None, single: float | None, path: Path, title: str
) -> str | None:
    """Aggregate and per-sequence tok/s against K; returns an error text instead of raising when it cannot plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (it is in requirements-dev.txt): no plot written"
    ks = [entry["k"] for entry in batched]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    axes.plot(ks, [entry["aggregate_tokens_per_s"] for entry in batched], "o-", label="aggregate (all sequences)")
    axes.plot(ks, [entry["per_seq_tokens_per_s"] for entry in batched], "s--", label="per sequence")
    if single:
        axes.axhline(single, color="grey", linestyle=":", label=f"(c) raw llama_decode, 1 sequence: {single:.1f}")
    if ceiling:
        axes.axhline(ceiling, color="red", linestyle="-.", label=f"(d) roofline, 1 sequence: {ceiling:.1f}")
    axes.set_xscale("log", base=2)
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.set_xlabel("sequences per decode step (K)")
    axes.set_ylabel("decode tokens/s")
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, affinity, memory, llama.cpp's build features and library versions."""
    import llama_cpp

    def cpuinfo(key: str) -> str | None:
        try:
            for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            return None
        return None

    def meminfo_gib() -> float | None:
        try:
            for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
        except OSError:
            return None
        return None

    return {
        "cpu_model": cpuinfo("model name"),
        "cpu_flags_avx512f": "avx512f" in cpu_flags(),
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "mem_total_gib": meminfo_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_system_info": llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
        "versions": {
            name: importlib.metadata.version(name) for name in ("llama_cpp_python", "numpy", "gguf", "pydantic")
        },
    }


def cpu_flags() -> set[str]:
    """The instruction-set flags /proc/cpuinfo lists for the first CPU (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# -- the second build -------------------------------------------------------------------------


def prepare_compare_build(enabled: bool) -> dict[str, Any]:
    """The AVX-512 build's libraries, unpacked into COMPARE_LIB_DIR, or why the comparison is skipped.

    scripts/build_llama.py compiles the build once (about 10 minutes on 2 cores) and keeps its wheel
    under a key of its flags; later runs only check the key of the unpacked libraries.
    """
    import build_llama

    info: dict[str, Any] = {"build": COMPARE_BUILD, "flags_file": str(COMPARE_FLAGS.relative_to(ROOT))}
    machine = platform.machine().lower()
    if not enabled:
        return {**info, "skipped": "--no-compare-builds"}
    if build_llama.ARCHITECTURES.get(machine) != "amd64":
        return {**info, "skipped": f"this machine is {machine}, not x86_64: no AVX-512 build to compare"}
    options = build_llama.cmake_flag_values(build_llama.read_flags(COMPARE_FLAGS))
    needed = [flag for option, flags in CPU_FLAGS_OF_OPTION.items() if options.get(option) == "ON" for flag in flags]
    missing = [flag for flag in needed if flag not in cpu_flags()]
    if missing:
        return {**info, "skipped": f"this CPU lacks {', '.join(missing)}, which the AVX-512 build uses"}
    print(
        f"preparing the {COMPARE_BUILD} build's libraries in {COMPARE_LIB_DIR.relative_to(ROOT)} "
        f"(the first time compiles llama.cpp with {COMPARE_FLAGS.name}: about 10 minutes on 2 cores) ...",
        flush=True,
    )
    started = time.perf_counter()
    try:
        lib_dir = build_llama.unpack_libraries(
            sys.executable, COMPARE_FLAGS, build_llama.DEFAULT_CACHE, COMPARE_LIB_DIR
        )
    except (build_llama.BuildError, OSError) as exc:
        return {**info, "skipped": f"the {COMPARE_BUILD} build could not be prepared: {exc}"}
    key = (lib_dir / build_llama.MARKER_NAME).read_text(encoding="utf-8").split()[0]
    return {**info, "lib_dir": str(lib_dir.resolve()), "key": key, "prepare_s": round(time.perf_counter() - started, 1)}


def compare_builds(runs: list[dict[str, Any]], inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Paired ratios of the comparison build over the shipped one, and the dispatch decision.

    Each ratio is taken within a repetition, (b') over (b) and (c') over (c), as paired_ratio does;
    the decision takes the median of all of them, both configurations and every input pooled.
    """
    ratios: dict[str, dict[str, float | None]] = {}
    pooled: dict[str, list[float]] = {"prompt": [], "decode": []}
    for name in inputs:
        ratios[name] = {}
        for config in COMPARED:
            for speed, key in (("prompt", "prompt_tokens_per_s"), ("decode", "decode_tokens_per_s")):
                values = paired_ratios(runs, name, compared_config(config), config, key)
                pooled[speed] += values
                label = f"{config}'/{config} {speed}"
                ratios[name][label] = round(statistics.median(values), 3) if values else None
    prompt, decode = (round(statistics.median(pooled[k]), 3) if pooled[k] else None for k in ("prompt", "decode"))
    if prompt is None or decode is None:
        return {"ratios": ratios, "dispatch": None, "dispatch_text": "dispatch: no paired runs of both builds"}
    worth = max(prompt, decode) >= DISPATCH_GAIN
    if worth:
        text = f"dispatch: AVX-512 build worth shipping beside AVX2 (prompt {prompt:.2f}, decode {decode:.2f})"
    else:
        text = f"dispatch: one AVX2 build (AVX-512 gains prompt {prompt:.2f}, decode {decode:.2f} < {DISPATCH_GAIN})"
    return {
        "ratios": ratios,
        "pooled_ratios": {speed: [round(value, 3) for value in values] for speed, values in pooled.items()},
        "dispatch": {
            "prompt_ratio": prompt,
            "decode_ratio": decode,
            "threshold": DISPATCH_GAIN,
            "decision": "ship the AVX-512 build beside AVX2" if worth else "one AVX2 build",
        },
        "dispatch_text": text,
    }


def builds_of(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each build the children ran: its full system info, library folder and mapped files, and its configurations."""
    builds: dict[str, dict[str, Any]] = {}
    for run in runs:
        if "build" not in run:
            continue
        entry = builds.setdefault(
            run["build"],
            {
                "llama_system_info": run["llama_system_info"],
                "llama_lib_path": run["llama_lib_path"],
                "llama_lib_path_from": run["llama_lib_path_from"],
                "loaded_libraries": run["loaded_libraries"],
                "configs": [],
            },
        )
        if run["config"] not in entry["configs"]:
            entry["configs"].append(run["config"])
    return builds


# -- the engine settings sweep ---------------------------------------------------------------


def sweep_variants(cpus: int) -> list[tuple[str, dict[str, str]]]:
    """Each engine setting worth measuring, as environment overrides of the engine's defaults."""
    thread_counts = sorted({1, max(1, cpus // 2), cpus + 1, 2 * cpus} - {cpus})
    return [
        *((f"N_THREADS={n}", {"N_THREADS": str(n)}) for n in thread_counts),
        *((f"N_UBATCH={n}", {"N_BATCH": str(n), "N_UBATCH": str(n)}) for n in (128, 256)),
        ("KV_CACHE_TYPE_K=f16", {"KV_CACHE_TYPE_K": "f16"}),
        ("FLASH_ATTN=true", {"FLASH_ATTN": "true"}),
        ("USE_MMAP=true", {"USE_MMAP": "true"}),
    ]


def run_sweep(base: dict[str, Any], data: dict[str, Any], work: Path) -> dict[str, Any]:
    """Each setting against the engine's defaults, in pairs of fresh processes run back to back.

    The order within a pair alternates, and each ratio is taken within its pair: the drift of a
    shared machine over minutes cancels out (see paired_ratio).
    """
    common = {**base, "config": "b", "input": "summarize", "prompt": data["prompt"], "text": data["text"]}
    common["tokens"] = data["tokens"]
    # The same words in another order: the same instruction before other text, for prefix reuse.
    second_text = " ".join(reversed(data["text"].split()))
    pairs: list[dict[str, Any]] = []
    for index, (label, environ) in enumerate(sweep_variants(base["threads"] or available_cpus())):
        default_spec = {**common, "second_text": second_text if index == 0 else None}
        specs = [("default", default_spec), (label, {**common, "environ": environ})]
        results = {}
        for name, spec in specs if index % 2 == 0 else specs[::-1]:
            results[name] = spawn(spec, work, f"sweep-{index}-{'default' if name == 'default' else 'variant'}")
        default, variant = speeds(results["default"]), speeds(results[label])
        pairs.append(
            {
                "setting": label,
                "environ": environ,
                "default": {**results["default"], **default},
                "variant": {**results[label], **variant},
                "ratios": {key: _ratio(variant[key], default[key]) for key in default},
            }
        )
    first = pairs[0]["default"]
    reused = first["second_prompt_tokens"] - first["second_prompt_eval_tokens"]
    prefix = {
        "prompt_tokens": first["second_prompt_tokens"],
        "reused_tokens": reused,
        "evaluated_tokens": first["second_prompt_eval_tokens"],
        "prompt_ms": round(first["second_prompt_ms"], 1),
        "cold_prompt_ms": round(first["prompt_ms"], 1),
    }
    return {"pairs": pairs, "prefix_reuse": prefix}


def print_sweep(sweep: dict[str, Any]) -> None:
    header = ["setting", "prompt tok/s", "decode tok/s", "e2e tok/s", "load s", "peak RSS MB", "prompt x", "decode x"]
    speed_keys = ("prompt_tokens_per_s", "decode_tokens_per_s", "e2e_decode_tokens_per_s", "load_s", "peak_rss_mb")
    lines = [
        [
            pair["setting"],
            *(_cell(pair["variant"][key]) for key in speed_keys),
            _cell(pair["ratios"]["prompt_tokens_per_s"]),
            _cell(pair["ratios"]["e2e_decode_tokens_per_s"]),
        ]
        for pair in sweep["pairs"]
    ]
    print_aligned(header, lines, 1)
    print("prompt x, decode x: the setting's speed over the defaults' in a run right beside it (decode end to end)")
    prefix = sweep["prefix_reuse"]
    print(
        f"prefix reuse: the next request with the same instruction evaluated {prefix['evaluated_tokens']} of "
        f"{prefix['prompt_tokens']} prompt tokens ({prefix['reused_tokens']} reused from the KV cache), "
        f"{prefix['prompt_ms']:.0f} ms against {prefix['cold_prompt_ms']:.0f} ms for the first"
    )


# -- documents: four tasks over one text, and a long text's map step ----------------------------

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
    template through its vocabulary) and the document is cut into chunk requests by handler.documents.split.
    """
    from handler.documents import split
    from handler.engine import prompt_counter
    from handler.service import parse_request
    from handler.tasks import build_messages

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
    from handler.tasks import Message

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
    from handler.tasks import Message

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
    from handler.service import parse_request
    from handler.tasks import build_messages

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
    """A long text's map step: its chunk requests (handler.documents.split) one at a time, and batched."""
    from handler.documents import split
    from handler.service import parse_request
    from handler.tasks import build_messages

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


# Figures that are counts (the same in every repetition) and times (medians over repetitions).
_COUNT_KEYS = (
    "requests",
    "prompt_tokens",
    "prompt_eval_tokens_llama",
    "prompt_eval_tokens_engine",
    "decode_tokens",
    "finish_reasons",
)
_TIME_KEYS = ("prompt_s", "decode_s", "wall_s")


def _variant_ratios(variant: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """What a variant costs against the baseline: shares of its evaluated prompt tokens and of its times
    (the projection's factors)."""
    return {
        "prompt_eval_share": _ratio(variant["prompt_eval_tokens_llama"], baseline["prompt_eval_tokens_llama"]),
        "prompt_time_share": _ratio(variant["prompt_s"], baseline["prompt_s"]),
        "decode_time_share": _ratio(variant["decode_s"], baseline["decode_s"]),
        "wall_time_share": _ratio(variant["wall_s"], baseline["wall_s"]),
    }


def compare_variants(runs: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, Any]:
    """Each variant's figures (times: medians over repetitions) and its ratios to the first variant.

    The ratios are taken within each child process, whose variants ran back to back on one loaded engine, and
    the median of those is reported (see paired_ratio).
    """
    names = [name for name in labels if name in runs[0]["variants"]]
    baseline = names[0]
    figures: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, float | None]] = {}
    for name in names:
        measured = [run["variants"][name] for run in runs]
        figures[name] = {
            "label": labels[name],
            **{key: measured[0][key] for key in _COUNT_KEYS},
            **{key: round(_median(measured, key), 3) for key in _TIME_KEYS},
        }
        if name == baseline:
            continue
        paired = [_variant_ratios(run["variants"][name], run["variants"][baseline]) for run in runs]
        ratios[name] = {}
        for key in paired[0]:
            values = [float(value) for value in (pair[key] for pair in paired) if value is not None]
            ratios[name][key] = round(statistics.median(values), 3) if values else None
        # The speedup from the median share itself, so the two agree with an even number of repetitions too.
        share = ratios[name]["wall_time_share"]
        ratios[name]["wall_speedup"] = round(1.0 / share, 3) if share else None
    return {"baseline": baseline, "variants": figures, "ratios": ratios}


def print_comparison(comparison: dict[str, Any]) -> None:
    """One comparison's table: counts, times, and each variant against the first."""
    header = [
        "variant",
        "requests",
        "prompt tok",
        "evaluated (llama.cpp)",
        "evaluated (engine)",
        "decode tok",
        "prompt s",
        "decode s",
        "wall s",
        "evaluated x",
        "wall speedup",
    ]
    lines = []
    for name, figures in comparison["variants"].items():
        ratios = comparison["ratios"].get(name, {"prompt_eval_share": 1.0, "wall_speedup": 1.0})
        lines.append(
            [
                figures["label"],
                *(
                    _cell(figures[key])
                    for key in (
                        "requests",
                        "prompt_tokens",
                        "prompt_eval_tokens_llama",
                        "prompt_eval_tokens_engine",
                        "decode_tokens",
                        "prompt_s",
                        "decode_s",
                        "wall_s",
                    )
                ),
                _cell(ratios["prompt_eval_share"]),
                _cell(ratios["wall_speedup"]),
            ]
        )
    print_aligned(header, lines, 1)


# The documents' children, registered beside the others (they are defined after the table).
CHILDREN["documents-tasks"] = child_document_tasks
CHILDREN["documents-chunks"] = child_document_chunks


def read_into_page_cache(path: Path) -> None:
    """Read the file once, so every child finds it in the page cache: none pays the disk read for the others."""
    with path.open("rb") as model_file:
        while model_file.read(8 << 20):
            pass


def run_documents(args: argparse.Namespace, model: dict[str, Any], out_dir: Path, work: Path) -> int:
    """The documents benchmark: (a) one text x 4 tasks, (b) a long text's map step; writes documents.json."""
    quick: bool = args.quick
    text_tokens = args.text_tokens or (QUICK_TEXT_TOKENS if quick else TEXT_TOKENS)
    document_tokens = args.document_tokens or (QUICK_DOCUMENT_TOKENS if quick else DOCUMENT_TOKENS)
    max_tokens = args.doc_max_tokens or (QUICK_DOC_MAX_TOKENS if quick else DOC_MAX_TOKENS)
    repeats = args.repeats or 1
    started = time.perf_counter()
    settings = settings_from({**os.environ, "MODEL_PATH": str(args.model)})
    type_k = kv_cache_type_k(args.model, settings.kv_cache_type_k)
    parallel = settings.batch_parallel
    inputs = document_inputs(settings, text_tokens, document_tokens, max_tokens)
    text, document = inputs["text"], inputs["document"]
    task_variants = [name for name in TASK_VARIANTS if name != "batched_unshared" or args.unshared_batch]
    tasks_n_ctx = batch_context_size(text["prompt_tokens"], max_tokens, parallel, settings.batch_n_ctx)
    chunks_n_ctx = batch_context_size(document["chunk_prompt_tokens"], max_tokens, parallel, settings.batch_n_ctx)
    estimate_s = estimate_documents_s(inputs, task_variants, max_tokens, repeats)
    print(
        f"(a) text: {text['tokens']} tokens ({text['words']} words of {inputs['source']}), {len(DOCUMENT_TASKS)} "
        f"tasks, prompts of {', '.join(str(n) for n in text['prompt_tokens'])} tokens; prompt tokens to evaluate: "
        + ", ".join(f"{name} {text['expected_prompt_eval_tokens'][name]}" for name in task_variants)
    )
    print(
        f"(b) document: {document['tokens']} tokens ({document['words']} words), {document['chunks']} chunk requests "
        f"of {min(document['chunk_prompt_tokens'])}-{max(document['chunk_prompt_tokens'])} prompt tokens"
    )
    print(
        f"{max_tokens} tokens per request, BATCH_PARALLEL {parallel}, BATCH_N_CTX {tasks_n_ctx} for (a) and "
        f"{chunks_n_ctx} for (b), K cache {type_k}, {repeats} repetition(s); estimated {estimate_s / 60:.0f} min "
        f"at {ESTIMATE_PROMPT_TOKENS_PER_S:.0f} prompt and {ESTIMATE_DECODE_TOKENS_PER_S:.0f} decode tok/s "
        "(the bench model on 2 cores)"
    )
    read_into_page_cache(args.model)
    base = {
        "model": str(args.model),
        "model_sha256": model["sha256"],
        "type_k": type_k,
        "threads": args.threads,
        "parallel": parallel,
        "max_tokens": max_tokens,
    }
    # A child runs one comparison, which with long texts or slow CPUs may take longer than the other benchmarks' limit.
    child_timeout_s = max(CHILD_TIMEOUT_S, 3 * estimate_s)
    runs: list[dict[str, Any]] = []
    for repeat in range(repeats):
        # Every other repetition runs the variants in reverse order: none always runs first (or warmest).
        forward = repeat % 2 == 0
        runs.append(
            spawn(
                {
                    **base,
                    "config": "documents-tasks",
                    "input": "text",
                    "requests": text["requests"],
                    "batch_n_ctx": tasks_n_ctx,
                    "variants": task_variants if forward else task_variants[::-1],
                },
                work,
                f"documents-tasks-{repeat}",
                child_timeout_s,
            )
        )
        chunk_variants = list(CHUNK_VARIANTS)
        runs.append(
            spawn(
                {
                    **base,
                    "config": "documents-chunks",
                    "input": "document",
                    "request": document["request"],
                    "batch_n_ctx": chunks_n_ctx,
                    "variants": chunk_variants if forward else chunk_variants[::-1],
                },
                work,
                f"documents-chunks-{repeat}",
                child_timeout_s,
            )
        )
    task_runs = [run for run in runs if run["config"] == "documents-tasks"]
    chunk_runs = [run for run in runs if run["config"] == "documents-chunks"]
    tasks = {"batch_n_ctx": tasks_n_ctx, **compare_variants(task_runs, TASK_VARIANTS)}
    chunks = {
        "batch_n_ctx": chunks_n_ctx,
        "chunks": chunk_runs[0]["chunks"],
        **compare_variants(chunk_runs, CHUNK_VARIANTS),
    }

    # Every request must have generated max_tokens tokens, or the variants compare different work.
    counts_match = all(
        figures["decode_tokens"] == figures["requests"] * max_tokens
        for comparison in (tasks, chunks)
        for figures in comparison["variants"].values()
    )
    disturbed = {run["run"]: run["other_cpu_share"] for run in runs if run["other_cpu_share"] > DISTURBED_SHARE}
    builds = builds_of(runs)

    print()
    print(
        f"(a) one text of {text['tokens']} tokens x {len(DOCUMENT_TASKS)} tasks, {max_tokens} tokens each "
        f"(BATCH_N_CTX {tasks_n_ctx}):"
    )
    print_comparison(tasks)
    print()
    print(
        f"(b) map step of a {document['tokens']}-token text: {chunks['chunks']} chunk requests, {max_tokens} tokens "
        f"each (BATCH_PARALLEL {parallel}, BATCH_N_CTX {chunks_n_ctx}; one at a time: engine.generate, each in turn):"
    )
    print_comparison(chunks)
    print()
    print(
        "evaluated (llama.cpp): its counters, all tokens evaluated less the decode steps; (engine): the completions' "
        "prompt_eval_tokens. evaluated x, wall speedup: against the first row, within each run, median over runs."
    )
    for title, comparison in (("(a)", tasks), ("(b)", chunks)):
        baseline = comparison["variants"][comparison["baseline"]]["label"]
        for name, values in comparison["ratios"].items():
            print(
                f"ratios {title} {comparison['variants'][name]['label']} / {baseline}: "
                + ", ".join(f"{key} {_cell(value)}" for key, value in values.items())
            )
    for build, entry in builds.items():
        print(f"build {build} ({entry['llama_lib_path']}): {entry['llama_system_info']}")
    if disturbed:
        print(
            "warning: other processes competed for the CPUs during "
            + ", ".join(f"{name} ({share:.0%})" for name, share in disturbed.items())
            + ": those numbers are not representative; rerun on a quiet machine"
        )

    def without_texts(request: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in request.items() if key != "text"}

    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "quick": quick,
            "text_tokens": text_tokens,
            "document_tokens": document_tokens,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "repeats": repeats,
            "threads": runs[0]["threads"],
            "type_k": type_k,
            "parallel": parallel,
            "n_ctx": runs[0]["n_ctx"],
            "task_variants": task_variants,
            "chunk_variants": list(CHUNK_VARIANTS),
        },
        "machine": machine_info(),
        "model": {**model, **model_layout(args.model)},
        "build": runs_build(runs),
        "builds": builds,
        "inputs": {
            "source": inputs["source"],
            # The texts are the source's first characters (repeated when a target exceeds it): chars say how many.
            "text": {
                **{key: value for key, value in text.items() if key != "requests"},
                "requests": [without_texts(request) for request in text["requests"]],
            },
            "document": {
                **{key: value for key, value in document.items() if key != "request"},
                "request": without_texts(document["request"]),
            },
        },
        "estimate_s": round(estimate_s, 1),
        "tasks": tasks,
        "chunks": chunks,
        "token_counts": {"generated_per_request": max_tokens, "match": counts_match},
        "disturbed_runs": disturbed,
        "runs": runs,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    path = out_dir / "documents.json"
    path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"wrote {path}; documents wall time {report['wall_s']:.0f} s (estimated {estimate_s:.0f} s)")
    if not counts_match:
        print(f"error: generated token counts differ from {max_tokens} per request", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description="Decode-speed benchmark: seed setup, engine, raw llama.cpp, roofline, batching, AVX-512 build."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="64 tokens, the summarize input only, 3 repetitions (batched: one; raw: one prompt sample; "
        f"(b') and (c'): {QUICK_COMPARE_REPEATS} repetition)",
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF to run; generated if it is missing")
    parser.add_argument("--out-dir", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--threads", type=int, default=None, help="threads of (b), (c), (e); default: CPUs this process may use"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repetitions of (a)-(c'), (e); default 3, medians reported (--documents: default 1)",
    )
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens to generate; default 64 quick, 170 full")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="instead: each engine setting (threads, batch size, K cache, flash attention, mmap) against the defaults",
    )
    parser.add_argument(
        "--documents",
        action="store_true",
        help="instead: four tasks over one text (separate, one after another, batched with a shared prefix) and a "
        "long text's map step (one chunk at a time, batched); writes documents.json",
    )
    parser.add_argument(
        "--text-tokens",
        type=int,
        default=None,
        help=f"--documents: tokens of the text of the four tasks; default {TEXT_TOKENS} ({QUICK_TEXT_TOKENS} quick)",
    )
    parser.add_argument(
        "--document-tokens",
        type=int,
        default=None,
        help=f"--documents: tokens of the long text; default {DOCUMENT_TOKENS} ({QUICK_DOCUMENT_TOKENS} quick)",
    )
    parser.add_argument(
        "--doc-max-tokens",
        type=int,
        default=None,
        help=f"--documents: tokens generated per request; default {DOC_MAX_TOKENS} ({QUICK_DOC_MAX_TOKENS} quick)",
    )
    parser.add_argument(
        "--unshared-batch",
        action="store_true",
        help="--documents: also the four tasks batched without sharing the text's prefix (adds four whole prompts)",
    )
    parser.add_argument(
        "--no-compare-builds",
        action="store_true",
        help="skip (b') and (c'): the AVX-512 build beside the shipped one (run only on x86_64 hosts with AVX-512)",
    )
    parser.add_argument(
        "--compare-repeats",
        type=int,
        default=None,
        help=f"repetitions that also run (b') and (c'); default: all ({QUICK_COMPARE_REPEATS} in the quick run)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child)
    if args.sweep and args.documents:
        parser.error("--sweep and --documents are separate runs: choose one")
    if args.doc_max_tokens is not None and args.doc_max_tokens < 2:
        # One token takes no decode step: nothing of decoding would be measured, and llama.cpp's counters read
        # a count of 0 as 1.
        parser.error("--doc-max-tokens must be at least 2")

    max_tokens = args.max_tokens or (32 if args.sweep else 64 if args.quick else 170)
    repeats = args.repeats or 3
    threads = args.threads or available_cpus()
    out_dir: Path = args.out_dir
    work = out_dir / "runs"
    work.mkdir(parents=True, exist_ok=True)

    # Generating the model and compiling the comparison build happen once, before the timed part.
    model = ensure_model(args.model)
    if args.documents:
        return run_documents(args, model, out_dir, work)
    compare = prepare_compare_build(not args.no_compare_builds) if not args.sweep else None
    if compare and compare.get("skipped"):
        print(f"build comparison skipped: {compare['skipped']}")
    compare_lib = compare.get("lib_dir") if compare else None
    compare_repeats = min(
        repeats,
        args.compare_repeats if args.compare_repeats is not None else QUICK_COMPARE_REPEATS if args.quick else repeats,
    )
    started = time.perf_counter()
    layout = model_layout(args.model)
    print(
        f"model: {layout['file_type']}, {layout['tensor_bytes'] / 1e9:.2f} GB of tensors: "
        + ", ".join(f"{count} {name}" for name, count in sorted(layout["tensors_by_type"].items()))
    )
    read_into_page_cache(args.model)

    inputs = build_inputs(args.model, args.quick or args.sweep)
    # The engine's K cache type (KV_CACHE_TYPE_K, as the service reads it), resolved for this model:
    # (b) uses it, and (c), (d) and (e) take it too, so they measure the same work without Python.
    engine_settings = settings_from({**os.environ, "MODEL_PATH": str(args.model)})
    type_k = kv_cache_type_k(args.model, engine_settings.kv_cache_type_k)

    base = {
        "model": str(args.model),
        "max_tokens": max_tokens,
        "threads": args.threads,
        "type_k": type_k,
        "use_mmap": engine_settings.use_mmap,
    }
    if args.sweep:
        print(f"engine settings against the defaults (threads {threads}, K cache {type_k}, {max_tokens} tokens):")
        sweep = run_sweep(base, inputs["summarize"], work)
        print()
        print_sweep(sweep)
        report = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {"max_tokens": max_tokens, "threads": threads, "type_k": type_k},
            "machine": machine_info(),
            "model": {**model, **layout},
            **sweep,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        (out_dir / "sweep.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(f"wrote {out_dir / 'sweep.json'}; sweep wall time {report['wall_s']:.0f} s")
        return 0

    runs: list[dict[str, Any]] = []
    compared = f", (b') and (c') with the {COMPARE_BUILD} build in {compare_repeats} of them" if compare_lib else ""
    print(
        f"running (threads {threads} for b/c/e, K cache {type_k} for b/c/d/e, {max_tokens} tokens, "
        f"{repeats} repetition(s){compared}):"
    )
    bandwidth = spawn({**base, "config": "d", "threads": threads}, work, "d")
    runs.append(bandwidth)
    for repeat in range(repeats):
        for name, data in inputs.items():
            common = {**base, "input": name, "prompt": data["prompt"], "text": data["text"], "tokens": data["tokens"]}
            groups = [
                [("a", {**common, "config": "a"})],
                [("b", {**common, "config": "b"})],
                # The quick run keeps one prompt sample of (c): its prompt speed is in no goal (b/a is), and
                # the second sample would cost about 20 s of the five minutes.
                [("c", {**common, "config": "c", "threads": threads, "repeat_prompt": not args.quick})],
            ]
            if compare_lib and repeat < compare_repeats:
                for group in groups:
                    config, spec = group[0]
                    if config not in COMPARED:
                        continue
                    twin_spec = {
                        "config": compared_config(config),
                        "lib_path": compare_lib,
                        "expect_build": COMPARE_BUILD,
                    }
                    twin = (compared_config(config), {**spec, **twin_spec})
                    # The two builds back to back, which first alternating: their ratio sees the least drift.
                    group[:] = [group[0], twin] if repeat % 2 == 0 else [twin, group[0]]
            # Each repetition starts with another configuration, so no one of them always runs first
            # (a cooler CPU, a fresher page cache).
            shift = repeat % len(groups)
            for group in groups[shift:] + groups[:shift]:
                for config, spec in group:
                    runs.append(spawn(spec, work, f"{config}-{name}-{repeat}"))
        if args.quick and repeat > 0:
            continue  # batched decoding once (about two minutes on 2 cores): the quick run must stay short
        summarize_input = inputs["summarize"]
        batched_spec = {
            **base,
            "config": "e",
            "input": "summarize",
            "tokens": summarize_input["tokens"],
            "threads": threads,
        }
        runs.append(spawn({**batched_spec, "batch_sizes": list(BATCH_SIZES)}, work, f"e-summarize-{repeat}"))

    # Every configuration must have generated the same number of tokens, or the speeds compare different work.
    counts = {run["run"]: run["decode_tokens"] for run in runs if run["config"] != "d"}
    print("generated tokens:", ", ".join(f"{key} {value}" for key, value in counts.items()))
    counts_match = set(counts.values()) == {max_tokens}
    disturbed = {run["run"]: run["other_cpu_share"] for run in runs if run["other_cpu_share"] > DISTURBED_SHARE}
    if disturbed:
        print(
            "warning: other processes competed for the CPUs during "
            + ", ".join(f"{name} ({share:.0%})" for name, share in disturbed.items())
            + ": those numbers are not representative; rerun on a quiet machine"
        )

    rows, summary, batched = tabulate(runs, inputs, layout, threads, max_tokens, type_k)
    bandwidth_gbs = summary["d-summarize"]["read_gb_per_s"]

    ratios: dict[str, Any] = {}
    for name in inputs:
        c, d = summary[f"c-{name}"], summary[f"d-{name}"]
        ratios[name] = {
            "b/a decode": paired_ratio(runs, name, "b", "a", "decode_tokens_per_s"),
            "b/a e2e decode": paired_ratio(runs, name, "b", "a", "e2e_decode_tokens_per_s"),
            "b/a prompt": paired_ratio(runs, name, "b", "a", "prompt_tokens_per_s"),
            "b/c decode": paired_ratio(runs, name, "b", "c", "decode_tokens_per_s"),
            "b/c e2e decode": paired_ratio(runs, name, "b", "c", "e2e_decode_tokens_per_s"),
            "c/a prompt": paired_ratio(runs, name, "c", "a", "prompt_tokens_per_s"),
            # (d) is measured once, before the repetitions: a ratio of the medians.
            "c/d decode": _ratio(c["decode_tokens_per_s"], d["decode_tokens_per_s"]),
        }
    single = batched[0]["aggregate_tokens_per_s"]
    ratios["summarize"].update(
        {f"e({entry['k']})/e(1) aggregate": _ratio(entry["aggregate_tokens_per_s"], single) for entry in batched[1:]}
    )
    builds = builds_of(runs)
    comparison = compare_builds(runs, inputs) if compare_lib else None

    print()
    print_table(rows)
    print()
    sums = bandwidth["gb_per_s_by_kernel"]["sum_f32"]
    print(
        f"roofline: {bandwidth_gbs:.1f} GB/s read ({threads} threads; 1 thread: "
        f"{bandwidth['gb_per_s_by_threads']['1']:.1f} GB/s; a float32 sum alone: {sums[str(threads)]:.1f} and "
        f"{sums['1']:.1f} GB/s) over {layout['weight_bytes_per_token'] / 1e9:.3f} GB of weights per token "
        f"+ {kv_bytes_per_position(layout, type_k) // 1024} KiB of KV per context position (K cache {type_k})"
    )
    print("ratios of (a), (b), (c): medians of the ratios within each repetition")
    for name, values in ratios.items():
        print(f"ratios ({name}): " + ", ".join(f"{key} {_cell(value)}" for key, value in values.items()))
    for build, entry in builds.items():
        print(f"build {build} ({', '.join(entry['configs'])}; {entry['llama_lib_path']}): {entry['llama_system_info']}")
    if comparison:
        for name, values in comparison["ratios"].items():
            print(
                f"{COMPARE_BUILD} over {summary[f'b-{name}']['build']} ({name}, paired within repetitions): "
                + ", ".join(f"{key} {_cell(value)}" for key, value in values.items())
            )
        print(comparison["dispatch_text"] + " [medians of all paired ratios of (b')/(b) and (c')/(c)]")
    elif compare:
        print(f"dispatch: not measured ({compare.get('skipped')})")
    for name in inputs:
        goals = [
            ("b/a decode, end to end", ratios[name]["b/a e2e decode"], 1.7),
            ("b/c decode, end to end", ratios[name]["b/c e2e decode"], 0.9),
            ("b/a prompt", ratios[name]["b/a prompt"], 1.0),
        ]
        if name == "summarize":
            goals.append(("e(4)/e(1) aggregate", ratios[name]["e(4)/e(1) aggregate"], 1.5))
        print(
            f"targets ({name}): "
            + ", ".join(
                f"{label} {_cell(value)} (goal {goal}: {'met' if (value or 0) >= goal else 'not met'})"
                for label, value, goal in goals
            )
        )

    batched_build = next(row["build"] for row in rows if row["name"].startswith("e "))
    plot_error = plot(
        batched,
        summary["d-summarize"]["decode_tokens_per_s"],
        summary["c-summarize"]["decode_tokens_per_s"],
        out_dir / "decode_vs_k.png",
        f"Batched decoding, Phi-3-mini shapes, random {layout['file_type']}, {batched_build} build",
    )
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "quick": args.quick,
            "max_tokens": max_tokens,
            "repeats": repeats,
            "threads": threads,
            "batch_sizes": list(BATCH_SIZES),
            "seed_n_ctx": SEED_N_CTX,
            "type_k": type_k,
            "compare_repeats": compare_repeats if compare_lib else 0,
        },
        "machine": machine_info(),
        "model": {**model, **layout},
        "inputs": {
            name: {key: value for key, value in data.items() if key != "prompt"} for name, data in inputs.items()
        },
        "token_counts": {"generated": counts, "match": counts_match},
        "disturbed_runs": disturbed,
        "summary": summary,
        "ratios": ratios,
        "builds": builds,
        "build_comparison": {**(compare or {}), **(comparison or {})},
        "runs": runs,
        "plot_error": plot_error,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out_dir / "bench.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(
        f"wrote {out_dir / 'bench.json'}" + (f"; {plot_error}" if plot_error else f" and {out_dir / 'decode_vs_k.png'}")
    )
    print(f"benchmark wall time {report['wall_s']:.0f} s (without generating the model or compiling a build)")
    if not counts_match:
        print(f"error: generated token counts differ from {max_tokens}: {counts}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
