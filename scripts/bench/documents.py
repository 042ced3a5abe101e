"""The documents benchmark (``--documents``): four tasks over one text, a long text's map step.

Its inputs are cut from the test text to token targets and counted by the service's own code; each comparison
runs in one child process (measurements.py: its variants back to back in one engine); the runs are compared
variant against baseline, printed and written to documents.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handler.core.settings import Settings, settings_from
from handler.domain.requests import SummarizeRequest
from handler.engine import kv_cache_type_k
from scripts.bench.builds import builds_of
from scripts.bench.configs import CHILD_TIMEOUT_S, DISTURBED_SHARE
from scripts.bench.model import model_layout, read_into_page_cache
from scripts.bench.report import cell, median, print_aligned, ratio, runs_build
from scripts.bench.runner import machine_info, spawn
from scripts.eval.answers import common_prefix
from scripts.repository import ROOT

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
        return max(min(common_prefix(prompts[index], other), len(prompts[index]) - 1) for other in earlier)

    after = whole - sum(reused(i, [prompts[i - 1]]) for i in range(1, len(prompts)))
    batched = whole - sum(reused(i, prompts[:i]) for i in range(1, len(prompts)))
    return {"separate": whole, "one_after_another": after, "batched_shared": batched, "batched_unshared": whole}


def document_inputs(settings: Settings, text_tokens: int, document_tokens: int, max_tokens: int) -> dict[str, Any]:
    """The text and the long document, cut from the test text to their token targets, with the requests over them.

    Prompts are built and counted by the service's own code (parse_request, build_messages, the model's chat
    template through its vocabulary) and the document is cut into chunk requests by handler.usecases.preparation.split.
    """
    from handler.domain.requests import parse_request
    from handler.engine import prompt_counter
    from handler.formats.prompts import build_messages
    from handler.usecases.preparation import split

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
        "prompt_eval_share": ratio(variant["prompt_eval_tokens_llama"], baseline["prompt_eval_tokens_llama"]),
        "prompt_time_share": ratio(variant["prompt_s"], baseline["prompt_s"]),
        "decode_time_share": ratio(variant["decode_s"], baseline["decode_s"]),
        "wall_time_share": ratio(variant["wall_s"], baseline["wall_s"]),
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
            **{key: round(median(measured, key), 3) for key in _TIME_KEYS},
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
                    cell(figures[key])
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
                cell(ratios["prompt_eval_share"]),
                cell(ratios["wall_speedup"]),
            ]
        )
    print_aligned(header, lines, 1)


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
                + ", ".join(f"{key} {cell(value)}" for key, value in values.items())
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
