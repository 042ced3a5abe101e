"""The decode benchmark (``make bench``, ``--quick``): configurations (a)-(e) on the same inputs, their ratios
against the goals, the table, the decode-versus-batch plot and bench.json (the package's docstring has the
configurations)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from scripts.bench.builds import builds_of, compare_builds
from scripts.bench.configs import (
    BATCH_SIZES,
    COMPARE_BUILD,
    COMPARED,
    DISTURBED_SHARE,
    QUICK_COMPARE_REPEATS,
    SEED_N_CTX,
    compared_config,
)
from scripts.bench.model import kv_bytes_per_position
from scripts.bench.prefill_roofline import limit_line, prefill_limit, weight_macs_per_token
from scripts.bench.report import cell, paired_ratio, plot, print_table, ratio, tabulate
from scripts.bench.run_setup import RunSetup, write_report
from scripts.bench.runner import machine_info, spawn


def compare_repeats_of(args: argparse.Namespace, repeats: int) -> int:
    """Repetitions that also run (b') and (c'): the option, else one in the quick run, else all."""
    return min(
        repeats,
        args.compare_repeats if args.compare_repeats is not None else QUICK_COMPARE_REPEATS if args.quick else repeats,
    )


def run_configurations(
    setup: RunSetup, quick: bool, compare_lib: str | None, compare_repeats: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(d) once, then each repetition's (a), (b), (c) per input (and their twins on the comparison build), then (e).

    Returns (d)'s run and every run, (d)'s and (p)'s included.
    """
    base, threads = setup.base, setup.threads
    runs: list[dict[str, Any]] = []
    compared = f", (b') and (c') with the {COMPARE_BUILD} build in {compare_repeats} of them" if compare_lib else ""
    print(
        f"running (threads {threads} for b/c/e, K cache {setup.type_k} for b/c/d/e, {setup.max_tokens} tokens, "
        f"{setup.repeats} repetition(s){compared}):"
    )
    bandwidth = spawn({**base, "config": "d", "threads": threads}, setup.work, "d")
    runs.append(bandwidth)
    # (p) the cores' int8 dot-product peak: prefill's roofline, as (d) is decode's.
    runs.append(spawn({**base, "config": "p", "threads": threads}, setup.work, "p"))
    for repeat in range(setup.repeats):
        for name, data in setup.inputs.items():
            common = {**base, "input": name, "prompt": data["prompt"], "text": data["text"], "tokens": data["tokens"]}
            groups = [
                [("a", {**common, "config": "a"})],
                [("b", {**common, "config": "b"})],
                # The quick run keeps one prompt sample of (c): its prompt speed is in no goal (b/a is), and
                # the second sample would cost about 20 s of the five minutes.
                [("c", {**common, "config": "c", "threads": threads, "repeat_prompt": not quick})],
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
                    runs.append(spawn(spec, setup.work, f"{config}-{name}-{repeat}"))
        if quick and repeat > 0:
            continue  # batched decoding once (about two minutes on 2 cores): the quick run must stay short
        summarize_input = setup.inputs["summarize"]
        batched_spec = {
            **base,
            "config": "e",
            "input": "summarize",
            "tokens": summarize_input["tokens"],
            "threads": threads,
        }
        runs.append(spawn({**batched_spec, "batch_sizes": list(BATCH_SIZES)}, setup.work, f"e-summarize-{repeat}"))
    return bandwidth, runs


def decode_ratios(
    runs: list[dict[str, Any]], inputs: dict[str, Any], summary: dict[str, Any], batched: list[dict[str, Any]]
) -> dict[str, Any]:
    """Per input, the ratios the goals name; for summarize also each batch size's aggregate over one sequence."""
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
    return ratios


def prefill_limits(setup: RunSetup, runs: list[dict[str, Any]], summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Prefill's ceiling on each build the raw path ran, (c) and (c'), and the measured prompt speed's share of it."""
    peak = next((run for run in runs if run["config"] == "p"), None)
    if peak is None:
        return []
    macs = weight_macs_per_token(Path(setup.base["model"]))
    limits = []
    for config in ("c", compared_config("c")):
        measured = summary.get(f"{config}-summarize")
        if not measured or not measured.get("prompt_tokens_per_s"):
            continue
        limit = prefill_limit(
            peak, macs, measured["build"], measured["prompt_tokens_per_s"], len(setup.inputs["summarize"]["tokens"])
        )
        if limit:
            limits.append({"config": config, **macs, **limit})
    return limits


def print_findings(
    setup: RunSetup,
    bandwidth: dict[str, Any],
    summary: dict[str, Any],
    ratios: dict[str, Any],
    builds: dict[str, Any],
    compare: dict[str, Any] | None,
    comparison: dict[str, Any] | None,
) -> None:
    """The roofline, the ratios, the builds, the comparison build's speeds and the goals, met or not."""
    threads, layout, type_k = setup.threads, setup.layout, setup.type_k
    bandwidth_gbs = summary["d-summarize"]["read_gb_per_s"]
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
    for name in setup.inputs:
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


def run_decode(setup: RunSetup, args: argparse.Namespace, compare: dict[str, Any] | None) -> int:
    """The decode benchmark: every configuration run, checked, compared and reported; 1 if token counts differ."""
    compare_lib = compare.get("lib_dir") if compare else None
    compare_repeats = compare_repeats_of(args, setup.repeats)
    max_tokens, inputs = setup.max_tokens, setup.inputs
    bandwidth, runs = run_configurations(setup, args.quick, compare_lib, compare_repeats)

    # Every configuration must have generated the same number of tokens, or the speeds compare different work.
    counts = {run["run"]: run["decode_tokens"] for run in runs if run["config"] not in ("d", "p")}
    print("generated tokens:", ", ".join(f"{key} {value}" for key, value in counts.items()))
    counts_match = set(counts.values()) == {max_tokens}
    disturbed = {run["run"]: run["other_cpu_share"] for run in runs if run["other_cpu_share"] > DISTURBED_SHARE}
    if disturbed:
        print(
            "warning: other processes competed for the CPUs during "
            + ", ".join(f"{name} ({share:.0%})" for name, share in disturbed.items())
            + ": those numbers are not representative; rerun on a quiet machine"
        )

    rows, summary, batched = tabulate(runs, inputs, setup.layout, setup.threads, max_tokens, setup.type_k)
    ratios = decode_ratios(runs, inputs, summary, batched)
    builds = builds_of(runs)
    comparison = compare_builds(runs, inputs) if compare_lib else None
    prefill = prefill_limits(setup, runs, summary)

    print()
    print_table(rows)
    print()
    print_findings(setup, bandwidth, summary, ratios, builds, compare, comparison)
    for limit in prefill:
        print(limit_line(limit, limit["config"]))

    batched_build = next(row["build"] for row in rows if row["name"].startswith("e "))
    plot_error = plot(
        batched,
        summary["d-summarize"]["decode_tokens_per_s"],
        summary["c-summarize"]["decode_tokens_per_s"],
        setup.out_dir / "decode_vs_k.png",
        f"Batched decoding, Phi-3-mini shapes, random {setup.layout['file_type']}, {batched_build} build",
    )
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "quick": args.quick,
            "max_tokens": max_tokens,
            "repeats": setup.repeats,
            "threads": setup.threads,
            "batch_sizes": list(BATCH_SIZES),
            "seed_n_ctx": SEED_N_CTX,
            "type_k": setup.type_k,
            "compare_repeats": compare_repeats if compare_lib else 0,
        },
        "machine": machine_info(),
        "model": {**setup.model, **setup.layout},
        "inputs": {
            name: {key: value for key, value in data.items() if key != "prompt"} for name, data in inputs.items()
        },
        "token_counts": {"generated": counts, "match": counts_match},
        "disturbed_runs": disturbed,
        "summary": summary,
        "ratios": ratios,
        "builds": builds,
        "build_comparison": {**(compare or {}), **(comparison or {})},
        "prefill_roofline": prefill,
        "runs": runs,
        "plot_error": plot_error,
    }
    path = write_report(setup, "bench.json", report)
    print(f"wrote {path}" + (f"; {plot_error}" if plot_error else f" and {setup.out_dir / 'decode_vs_k.png'}"))
    print(f"benchmark wall time {report['wall_s']:.0f} s (without generating the model or compiling a build)")
    if not counts_match:
        print(f"error: generated token counts differ from {max_tokens}: {counts}", file=sys.stderr)
        return 1
    return 0
