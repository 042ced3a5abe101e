"""The documents benchmark run: its variants compared, printed and written to documents.json."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.builds import builds_of
from bench.configs import CHILD_TIMEOUT_S, DISTURBED_SHARE
from bench.documents import (
    CHUNK_VARIANTS,
    DOC_MAX_TOKENS,
    DOCUMENT_TASKS,
    DOCUMENT_TOKENS,
    ESTIMATE_DECODE_TOKENS_PER_S,
    ESTIMATE_PROMPT_TOKENS_PER_S,
    QUICK_DOC_MAX_TOKENS,
    QUICK_DOCUMENT_TOKENS,
    QUICK_TEXT_TOKENS,
    TASK_VARIANTS,
    TEXT_TOKENS,
    batch_context_size,
    document_inputs,
    estimate_documents_s,
)
from bench.model import model_layout
from bench.report import cell, median, print_aligned, ratio, runs_build
from bench.runner import machine_info, spawn
from handler.core.settings import settings_from
from handler.engine import (
    kv_cache_type_k,
)

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
