"""The benchmark's runs: the full run, --quick, --sweep, --documents, --drafting, and the child entry point."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.arguments import parse_args
from bench.builds import builds_of, compare_builds, prepare_compare_build
from bench.children import child_bandwidth, child_batched, child_engine, child_raw, child_seed, loadavg
from bench.configs import (
    BATCH_SIZES,
    COMPARE_BUILD,
    COMPARED,
    DISTURBED_SHARE,
    QUICK_COMPARE_REPEATS,
    SEED_N_CTX,
    compared_config,
)
from bench.documents_run import read_into_page_cache, run_documents
from bench.drafting import child_acceptance, child_cost, print_drafting, run_drafting
from bench.model import build_inputs, ensure_model, kv_bytes_per_position, model_layout
from bench.report import cell, paired_ratio, plot, print_table, ratio, tabulate
from bench.runner import loaded_build, machine_info, spawn
from bench.sweep import print_sweep, run_sweep
from handler.core.settings import available_cpus, settings_from
from handler.engine import (
    kv_cache_type_k,
    peak_rss_mb,
)

CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "a": child_seed,
    "b": child_engine,
    "c": child_raw,
    "d": child_bandwidth,
    "e": child_batched,
    # (b) and (c) with the comparison build: the same code, other libraries (LLAMA_CPP_LIB_PATH).
    compared_config("b"): child_engine,
    compared_config("c"): child_raw,
    "draft-acceptance": child_acceptance,
    "draft-cost": child_cost,
}


def run_child(spec_path: Path) -> int:
    """Child entry point: run one configuration and write its JSON next to the spec."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    result: dict[str, Any] = {"config": spec["config"], "input": spec.get("input"), "loadavg_start": loadavg()}
    result.update(CHILDREN[spec["config"]](spec))
    result.update(peak_rss_mb=peak_rss_mb(), loadavg_end=loadavg())
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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    if args.child:
        return run_child(args.child)
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
    compare = prepare_compare_build(not args.no_compare_builds) if not (args.sweep or args.drafting) else None
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

    # Drafting's cost is measured after a summary's context: the 2,000-token input has enough tokens.
    inputs = build_inputs(args.model, (args.quick or args.sweep) and not args.drafting)
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

    if args.drafting:
        print(f"prompt-lookup drafting (threads {threads}, K cache {type_k}):")
        drafting = run_drafting({**base, "threads": threads}, inputs["long"]["tokens"], work, args.quick)
        print()
        print_drafting(drafting)
        report = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {"quick": args.quick, "threads": threads, "type_k": type_k},
            "machine": machine_info(),
            "model": {**model, **layout},
            **drafting,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        (out_dir / "drafting.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(f"wrote {out_dir / 'drafting.json'}; drafting wall time {report['wall_s']:.0f} s")
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
            "c/d decode": ratio(c["decode_tokens_per_s"], d["decode_tokens_per_s"]),
        }
    single = batched[0]["aggregate_tokens_per_s"]
    ratios["summarize"].update(
        {f"e({entry['k']})/e(1) aggregate": ratio(entry["aggregate_tokens_per_s"], single) for entry in batched[1:]}
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
        print(f"ratios ({name}): " + ", ".join(f"{key} {cell(value)}" for key, value in values.items()))
    for build, entry in builds.items():
        print(f"build {build} ({', '.join(entry['configs'])}; {entry['llama_lib_path']}): {entry['llama_system_info']}")
    if comparison:
        for name, values in comparison["ratios"].items():
            print(
                f"{COMPARE_BUILD} over {summary[f'b-{name}']['build']} ({name}, paired within repetitions): "
                + ", ".join(f"{key} {cell(value)}" for key, value in values.items())
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
                f"{label} {cell(value)} (goal {goal}: {'met' if (value or 0) >= goal else 'not met'})"
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
