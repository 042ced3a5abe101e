"""The model menu measured (``--menu``): a generated model of each menu model's exact shapes, on both builds.

Speed depends on shapes, not values: each menu model's stand-in has its architecture, layer sizes and vocabulary
(scripts/models/random_model.py presets), in F16 quantized to Q4_K_M by llama.cpp's quantizer as the real files
were. All of them read the same 368 prompt tokens (ids every menu vocabulary has) and decode the same count, through
the same loop as ``--engines`` (side_by_side.py) with the shipped engine, on the shipped AVX2 build and, where the
CPU has it, the AVX-512 build. Ratios are taken within a repetition against Phi-3-mini's stand-in on the same build;
scripts/bench/cost.py turns them into seconds and dollars per 1,000 summaries. Writes menu.json.

Generating a stand-in takes minutes and as much disk as its F16 file (Qwen3-4B: 8 GB while it runs); each is kept
in models/bench/ and made once.
"""

from __future__ import annotations

import time
from pathlib import Path

from scripts.bench.cost import cost_lines, menu_costs
from scripts.bench.side_by_side import measure, prepare_builds, summarize, table_lines, write_run
from scripts.repository import BENCH_MODEL

#: Menu model (its manifest in layers/models/) -> the generator's preset of its shapes. The first is the anchor.
MENU = {
    "phi-3-mini-4k-instruct-q4": "phi3-mini",
    "qwen3-4b-q4": "qwen3-4b",
    "qwen3-1.7b-q4": "qwen3-1.7b",
    "smollm2-1.7b-instruct-q4": "smollm2-1.7b",
    "qwen2.5-1.5b-instruct-q4": "qwen2.5-1.5b",
}
QUANTIZATION = "Q4_K_M"


def stand_in(preset: str) -> Path:
    """The preset's Q4_K_M stand-in in models/bench/, generated once (Phi-3-mini's is the bench model itself)."""
    from scripts.models.random_model import make_quantized_model

    path = BENCH_MODEL if preset == "phi3-mini" else BENCH_MODEL.parent / f"{preset}-random-q4_k_m.gguf"
    if not path.is_file():
        print(f"generating {path} once: preset {preset} in F16, quantized to {QUANTIZATION} ...", flush=True)
        timings = make_quantized_model(path, preset, QUANTIZATION)
        print(f"generated in {timings['generation_s']:.0f} s, quantized in {timings['quantization_s']:.0f} s")
    return path


def run_menu(
    tokens: list[int], threads: int, type_k: str, repeats: int, max_tokens: int, out_dir: Path, work: Path
) -> int:
    """Every menu model on every build, ``repeats`` times; the table, the costs, menu.json."""
    started = time.perf_counter()
    files = {name: stand_in(preset) for name, preset in MENU.items()}
    builds = prepare_builds(with_fork=False)
    chosen = [
        {"engine": "llama.cpp", "build": build, "file": name, "model": str(path), "lib_path": entry["mainline_lib"]}
        for build, entry in builds.items()
        for name, path in files.items()
    ]
    runs = measure(chosen, tokens, threads, type_k, repeats, max_tokens, work)
    anchor = next(iter(MENU))
    table = summarize(runs, chosen, anchor)
    costs = menu_costs(table, anchor)
    print()
    for line in table_lines(table):
        print(line)
    print(f"x base: median over repetitions of the model's speed over {anchor}'s on the same build")
    for line in cost_lines(costs):
        print(line)
    settings = {"threads": threads, "type_k": type_k, "repeats": repeats, "max_tokens": max_tokens}
    fields = {"menu": MENU, "table": table, "costs": costs}
    path, report = write_run(out_dir / "menu.json", started, settings, tokens, files, runs, fields)
    print(f"wrote {path}; wall time {report['wall_s']:.0f} s (generating the stand-ins included)")
    return 0
