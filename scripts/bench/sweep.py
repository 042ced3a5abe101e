"""The settings sweep (``--sweep``): each engine setting against the defaults; writes sweep.json."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from handler.core.settings import available_cpus
from scripts.bench.report import cell, print_aligned, ratio, speeds
from scripts.bench.run_setup import RunSetup, write_report
from scripts.bench.runner import machine_info, spawn


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


def chosen_variants(cpus: int, only: str | None, repeats: int) -> list[tuple[str, dict[str, str]]]:
    """Every setting once; or, with ``only``, the settings starting with it, each ``repeats`` times."""
    variants = sweep_variants(cpus)
    if only is None:
        return variants
    chosen = [variant for variant in variants if variant[0].startswith(only)]
    if not chosen:
        raise SystemExit(f"error: no sweep setting starts with {only!r}; settings: {[name for name, _ in variants]}")
    return chosen * repeats


def run_sweep(
    base: dict[str, Any], data: dict[str, Any], work: Path, only: str | None = None, repeats: int = 1
) -> dict[str, Any]:
    """Each setting against the engine's defaults, in pairs of fresh processes run back to back.

    The order within a pair alternates, and each ratio is taken within its pair: the drift of a
    shared machine over minutes cancels out (see paired_ratio).
    """
    common = {**base, "config": "b", "input": "summarize", "prompt": data["prompt"], "text": data["text"]}
    common["tokens"] = data["tokens"]
    # The same words in another order: the same instruction before other text, for prefix reuse.
    second_text = " ".join(reversed(data["text"].split()))
    pairs: list[dict[str, Any]] = []
    for index, (label, environ) in enumerate(chosen_variants(base["threads"] or available_cpus(), only, repeats)):
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
                "ratios": {key: ratio(variant[key], default[key]) for key in default},
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
            *(cell(pair["variant"][key]) for key in speed_keys),
            cell(pair["ratios"]["prompt_tokens_per_s"]),
            cell(pair["ratios"]["e2e_decode_tokens_per_s"]),
        ]
        for pair in sweep["pairs"]
    ]
    print_aligned(header, lines, 1)
    print("prompt x, decode x: the setting's speed over the defaults' in a run right beside it (decode end to end)")
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for pair in sweep["pairs"]:
        by_setting.setdefault(pair["setting"], []).append(pair)
    for setting, pairs in by_setting.items():
        if len(pairs) > 1:
            prompt = statistics.median(pair["ratios"]["prompt_tokens_per_s"] for pair in pairs)
            decode = statistics.median(pair["ratios"]["e2e_decode_tokens_per_s"] for pair in pairs)
            print(f"{setting}: median of {len(pairs)} pairs: prompt x {prompt:.3f}, decode x {decode:.3f}")
    prefix = sweep["prefix_reuse"]
    print(
        f"prefix reuse: the next request with the same instruction evaluated {prefix['evaluated_tokens']} of "
        f"{prefix['prompt_tokens']} prompt tokens ({prefix['reused_tokens']} reused from the KV cache), "
        f"{prefix['prompt_ms']:.0f} ms against {prefix['cold_prompt_ms']:.0f} ms for the first"
    )


def run_sweep_benchmark(setup: RunSetup, only: str | None = None) -> int:
    """The sweep on the summarize input (``only``: the settings starting with it, ``setup.repeats`` pairs each),
    printed and written to sweep.json."""
    threads, type_k, max_tokens = setup.threads, setup.type_k, setup.max_tokens
    print(f"engine settings against the defaults (threads {threads}, K cache {type_k}, {max_tokens} tokens):")
    sweep = run_sweep(setup.base, setup.inputs["summarize"], setup.work, only, setup.repeats)
    print()
    print_sweep(sweep)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {"max_tokens": max_tokens, "threads": threads, "type_k": type_k},
        "machine": machine_info(),
        "model": {**setup.model, **setup.layout},
        **sweep,
    }
    path = write_report(setup, "sweep.json", report)
    print(f"wrote {path}; sweep wall time {report['wall_s']:.0f} s")
    return 0
