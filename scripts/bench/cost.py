"""What a summary costs on Lambda, projected from measured speed ratios: the one place the cost model's numbers live.

    python -m scripts.bench.cost [--menu bench-results/menu.json]     the menu's table in Markdown (docs/cost.md)

No AWS account was reachable where this was written, so nothing here is a Lambda measurement. The anchor is the
first source article's 10 GB Lambda (6 vCPUs) running Phi-3-mini Q4_K_M with the seed code: 14.5 s to read the
369-token summary prompt, 20.4 s to write 177 tokens. The engine's measured gains over the seed code on the same
model (the benchmark's (b)/(a), docs/perf/bench-full.txt) divide those; a menu model's seconds are Phi-3-mini's times
its measured speed ratio (menu.py: generated stand-ins of each model's shapes, the same tokens, the same machine, the
same run). Every model is assumed to need the same 369 + 177 tokens for a summary (tokenizers differ by a few
percent on English) and to run at 10,240 MB (6 vCPUs: the work is CPU bound, so less memory only slows it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# The anchor: the first article's Lambda measurements of the seed code (docs/cost.md, "Seconds per summary").
ARTICLE_PROMPT_S = 14.5
ARTICLE_DECODE_S = 20.4
# This engine over the seed code on Phi-3-mini's shapes, Q4_K_M (docs/perf/bench-full.txt: b/a prompt, b/a decode).
ENGINE_PROMPT_GAIN = 1.03
ENGINE_DECODE_GAIN = 1.93
# Prompt-lookup drafting on summaries: planned at the low end (its acceptance was measured on a 135M model that
# copies its input far more than Phi-3 would); the measured projection is the high end (docs/perf/drafting.txt).
DRAFTING_GAIN_PLANNED = 1.10
DRAFTING_GAIN_HIGH = 1.41
# Four requests per decode step: aggregate over one (docs/perf/bench-full.txt, e(4)/e(1)). Batched decoding drafts not.
BATCH_DECODE_GAIN = 2.00

MEMORY_GB = 10.0
# us-east-1 list prices, stated 2026-12-05 (docs/cost.md names the sources).
X86_GB_S = 0.0000166667
ARM_GB_S = 0.0000133334
REQUEST = 0.20 / 1_000_000
C7I_HOUR = 0.357  # c7i.2xlarge: one 6-vCPU environment of the worker, x86_64 with AVX-512
C7G_HOUR = 0.289  # c7g.2xlarge, arm64
MANAGED_FEE = 0.15


def phi3_seconds() -> dict[str, float]:
    """Phi-3-mini's projected Lambda seconds per summary: the prompt (AVX2 build) and decoding, by mode."""
    decode = ARTICLE_DECODE_S / ENGINE_DECODE_GAIN
    return {
        "prompt_avx2": ARTICLE_PROMPT_S / ENGINE_PROMPT_GAIN,
        "decode_single": decode,
        "decode_drafting": decode / DRAFTING_GAIN_PLANNED,
        "decode_drafting_high": decode / DRAFTING_GAIN_HIGH,
        "decode_batch": decode / BATCH_DECODE_GAIN,
    }


def dollars_per_1000(seconds: float, gb_s_price: float) -> float:
    return 1000 * (seconds * MEMORY_GB * gb_s_price + REQUEST)


def managed_per_1000(seconds: float, hour_price: float) -> float:
    """A busy Managed Instances environment: the instance's price plus the fee, over the summaries it makes."""
    return 1000 * hour_price * (1 + MANAGED_FEE) * seconds / 3600


def menu_costs(table: list[dict[str, Any]], anchor: str) -> list[dict[str, Any]]:
    """Per menu model: measured speeds, projected seconds and dollars per 1,000 summaries."""
    rows = {(row["file"], row["build"]): row for row in table}
    base = phi3_seconds()
    avx512_prompt_gain = None
    if (anchor, "avx512") in rows:
        avx512_prompt_gain = (
            rows[(anchor, "avx512")]["prompt_tokens_per_s"] / rows[(anchor, "avx2")]["prompt_tokens_per_s"]
        )
    costs = []
    for model in dict.fromkeys(row["file"] for row in table):
        avx2 = rows[(model, "avx2")]
        prompt_avx2 = base["prompt_avx2"] / avx2["prompt_ratio"]
        decode_ratio = avx2["decode_ratio"]
        decode = base["decode_drafting"] / decode_ratio
        entry: dict[str, Any] = {
            "model": model,
            "prompt_tokens_per_s": {"avx2": avx2["prompt_tokens_per_s"]},
            "decode_tokens_per_s": {"avx2": avx2["decode_tokens_per_s"]},
            "seconds": {
                "avx2_host": round(prompt_avx2 + decode, 1),
                "avx2_host_drafting_high": round(prompt_avx2 + base["decode_drafting_high"] / decode_ratio, 1),
                "batch_avx2": round(prompt_avx2 + base["decode_batch"] / decode_ratio, 1),
            },
        }
        if (model, "avx512") in rows and avx512_prompt_gain:
            avx512 = rows[(model, "avx512")]
            prompt_avx512 = base["prompt_avx2"] / avx512_prompt_gain / avx512["prompt_ratio"]
            entry["prompt_tokens_per_s"]["avx512"] = avx512["prompt_tokens_per_s"]
            entry["decode_tokens_per_s"]["avx512"] = avx512["decode_tokens_per_s"]
            entry["seconds"]["avx512_host"] = round(prompt_avx512 + decode, 1)
            entry["seconds"]["batch_avx512"] = round(prompt_avx512 + base["decode_batch"] / decode_ratio, 1)
        seconds = entry["seconds"]
        entry["dollars_per_1000"] = {
            "x86_avx2_host": round(dollars_per_1000(seconds["avx2_host"], X86_GB_S), 2),
            "arm64_projected": round(dollars_per_1000(seconds["avx2_host"], ARM_GB_S), 2),
            "managed_c7g_projected": round(managed_per_1000(seconds["batch_avx2"], C7G_HOUR), 2),
        }
        if "avx512_host" in seconds:
            entry["dollars_per_1000"]["x86_avx512_host"] = round(dollars_per_1000(seconds["avx512_host"], X86_GB_S), 2)
            entry["dollars_per_1000"]["managed_c7i"] = round(managed_per_1000(seconds["batch_avx512"], C7I_HOUR), 2)
        costs.append(entry)
    return costs


def cost_lines(costs: list[dict[str, Any]]) -> list[str]:
    """The costs as a Markdown table (docs/cost.md takes it as printed)."""

    def pair(values: dict[str, float]) -> str:
        return " / ".join(f"{values[key]:.1f}" for key in ("avx2", "avx512") if key in values)

    def money(value: float | None) -> str:
        return f"${value:.2f}" if value is not None else "-"

    lines = [
        "| model | prompt tok/s (AVX2 / AVX-512) | decode tok/s (AVX2 / AVX-512) | s per summary, AVX2 / AVX-512 host "
        "| on-demand x86_64, AVX2 / AVX-512 host | on-demand arm64 (projected) | Managed Instances c7i / c7g |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in costs:
        seconds, dollars = entry["seconds"], entry["dollars_per_1000"]
        lines.append(
            f"| {entry['model']} | {pair(entry['prompt_tokens_per_s'])} | {pair(entry['decode_tokens_per_s'])} "
            f"| {seconds['avx2_host']:.1f} / {seconds.get('avx512_host', float('nan')):.1f} "
            f"| {money(dollars['x86_avx2_host'])} / {money(dollars.get('x86_avx512_host'))} "
            f"| {money(dollars['arm64_projected'])} "
            f"| {money(dollars.get('managed_c7i'))} / {money(dollars['managed_c7g_projected'])} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--menu", type=Path, default=Path("bench-results/menu.json"))
    args = parser.parse_args(argv)
    report = json.loads(args.menu.read_text(encoding="utf-8"))  # written by menu.py
    anchor = next(iter(report["menu"]))
    for line in cost_lines(menu_costs(report["table"], anchor)):
        print(line)
    base = phi3_seconds()
    print(
        f"\nPhi-3-mini's anchor: prompt {base['prompt_avx2']:.1f} s (AVX2), decode {base['decode_single']:.1f} s "
        f"one at a time, {base['decode_drafting']:.1f} s with drafting at {DRAFTING_GAIN_PLANNED}x "
        f"({base['decode_drafting_high']:.1f} s at {DRAFTING_GAIN_HIGH}x), {base['decode_batch']:.1f} s four per step"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
