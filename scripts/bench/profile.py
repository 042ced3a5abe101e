"""Where a prompt's time goes: Linux ``perf`` samples of llama.cpp reading the seed prompt, grouped by operation.

    python -m scripts.bench.profile [--model PATH] [--threads N] [--repeats 3]     (make bench-profile)

Each build (the shipped AVX2 one and, where the CPU has AVX-512, the AVX-512 one) reads the bench model's 368-token
seed prompt in a child process with the engine's settings (the raw path of the benchmark's (c)). The child loads
the model, then starts ``perf record`` on itself, reads the prompt ``--repeats`` times from an empty cache, and
stops it: the samples cover the prompt alone, not the load or the repacking of the weights. ``perf report`` gives
the share of samples per function; they are grouped into what the issue asks about (matrix products by kind,
quantizing the activations, attention, thread waits, the rest), and the top functions are listed as they are.

The shipped libraries are stripped of their static symbol table; their exported functions (the matrix kernels,
``ggml_barrier``, the operations) keep their names, while samples in static helpers show as bare addresses and are
counted as "unnamed in libggml-cpu". Needs ``perf`` (Debian: linux-perf) and a kernel that lets this user sample
its own processes (``/proc/sys/kernel/perf_event_paranoid`` at most 2). Writes profile.json and profile.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scripts.bench.builds import prepare_compare_build
from scripts.bench.configs import SEED_N_CTX
from scripts.bench.model import build_inputs, ensure_model
from scripts.bench.report import aligned_lines
from scripts.bench.runner import spawn
from scripts.repository import BENCH_MODEL

SAMPLE_HZ = 999
TOP_FUNCTIONS = 15
#: Operation groups, first match wins: (group, regular expression over "library<TAB>function").
GROUPS: tuple[tuple[str, str], ...] = (
    ("matmul, repacked 4-bit weights (Q4_K/Q4_0 8x8 GEMM)", r"repack.*(gemm|gemv)|ggml_gemm_|ggml_gemv_"),
    ("matmul, Q6_K weights (not repacked: dot products)", r"vec_dot_q6_K"),
    ("matmul, other quantized dot products", r"vec_dot_q[0-9]|vec_dot_iq"),
    (
        "attention (f16 products, llamafile sgemm, softmax)",
        r"vec_dot_f16|vec_mad_f16|tinyBLAS|sgemm|soft_max|flash_attn",
    ),
    ("quantizing activations (to Q8_K / Q8_0), f32->f16", r"quantize_row_q8|quantize_mat|fp32_to_fp16|quantize_q8"),
    ("thread waits (barrier, yield, futex)", r"ggml_barrier|sched_yield|futex|__GI___sched_yield|pthread_cond"),
    (
        "norms, rope, elementwise, copies",
        r"rms_norm|rope|forward_add|forward_mul\b|forward_mul\t|silu|swiglu|glu|get_rows|forward_cpy|forward_dup|vec_|scale",
    ),
    ("unnamed in libggml-cpu (static functions of the stripped build)", r"libggml-cpu[^\t]*\t0x"),
    ("other llama.cpp / ggml", r"libggml|libllama"),
    ("kernel (page faults, scheduling)", r"\[kernel"),
)


def child_profile(spec: dict[str, Any]) -> dict[str, Any]:
    """Load, then record this process with perf while the prompt is read ``repeats`` times from an empty cache."""
    import llama_cpp

    from scripts.bench.measurements import eval_prompt, raw_context

    _, ctx, load_s = raw_context(spec, SEED_N_CTX, 1)
    eval_prompt(ctx, spec["tokens"][:8])  # first-use costs (buffers, thread pool) outside the recording
    memory = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_clear(memory, True)
    data = Path(spec["perf_data"])
    recorder = subprocess.Popen(
        ["perf", "record", "-F", str(SAMPLE_HZ), "-p", str(os.getpid()), "-o", str(data), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # perf attaches to every thread before the first prompt token
    if recorder.poll() is not None:
        raise RuntimeError(f"perf record stopped: {recorder.stderr.read().decode() if recorder.stderr else ''}")
    started = time.perf_counter()
    for _ in range(spec["repeats"]):
        llama_cpp.llama_memory_clear(memory, True)
        eval_prompt(ctx, spec["tokens"])
    elapsed = time.perf_counter() - started
    recorder.send_signal(signal.SIGINT)
    recorder.wait(timeout=60)
    tokens = len(spec["tokens"]) * spec["repeats"]
    return {"load_s": load_s, "prompt_tokens": tokens, "prompt_s": elapsed, "prompt_tokens_per_s": tokens / elapsed}


def read_report(data: Path) -> list[tuple[float, str, str]]:
    """(percent, library, function) per function, from ``perf report``'s plain output."""
    output = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso,sym", "--stdio", "-t", "\t"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in output.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split("\t")]
        if len(parts) < 3 or not parts[0].endswith("%"):
            continue
        symbol = re.sub(r"^\[\.\]\s*|^\[k\]\s*", "", parts[2])
        rows.append((float(parts[0].rstrip("%")), parts[1], symbol))
    return rows


def group_of(library: str, function: str) -> str:
    key = f"{library}\t{function}"
    for group, pattern in GROUPS:
        if re.search(pattern, key):
            return group
    return "other (Python, libc)"


def summarize_profile(rows: list[tuple[float, str, str]]) -> dict[str, Any]:
    """Shares by group and the top functions."""
    groups: dict[str, float] = {}
    for percent, library, function in rows:
        group = group_of(library, function)
        groups[group] = groups.get(group, 0.0) + percent
    top = sorted(rows, reverse=True)[:TOP_FUNCTIONS]
    return {
        "groups": {name: round(share, 1) for name, share in sorted(groups.items(), key=lambda item: -item[1])},
        "top": [{"percent": percent, "library": Path(lib).name, "function": fn} for percent, lib, fn in top],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=BENCH_MODEL)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3, help="prompts read while recording (default 3)")
    parser.add_argument("--out-dir", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        print("error: perf is not installed (Debian: apt-get install linux-perf)", file=sys.stderr)
        return 1
    work = args.out_dir / "runs"
    work.mkdir(parents=True, exist_ok=True)
    ensure_model(args.model)
    tokens = build_inputs(args.model, quick=True)["summarize"]["tokens"]
    builds: dict[str, str | None] = {"avx2": None}
    compare = prepare_compare_build(True)
    if compare.get("lib_dir"):
        builds["avx512"] = compare["lib_dir"]
    from handler.core.settings import settings_from
    from handler.engine import kv_cache_type_k

    type_k = kv_cache_type_k(args.model, settings_from({**os.environ, "MODEL_PATH": str(args.model)}).kv_cache_type_k)
    profiles: dict[str, Any] = {}
    for build, lib_path in builds.items():
        data = (work / f"profile-{build}.perf.data").resolve()
        spec = {
            "config": "profile",
            "model": str(args.model),
            "tokens": tokens,
            "threads": args.threads,
            "type_k": type_k,
            "use_mmap": True,
            "repeats": args.repeats,
            "perf_data": str(data),
            "lib_path": lib_path,
            "expect_build": build,
        }
        run = spawn(spec, work, f"profile-{build}")
        profiles[build] = {**run, **summarize_profile(read_report(data))}
    lines = render(profiles, args, len(tokens))
    text = "\n".join(lines)
    print(text)
    (args.out_dir / "profile.txt").write_text(text + "\n", encoding="utf-8")
    (args.out_dir / "profile.json").write_text(json.dumps(profiles, indent=1), encoding="utf-8")
    return 0


def render(profiles: dict[str, Any], args: argparse.Namespace, prompt_tokens: int) -> list[str]:
    """The groups side by side per build, then each build's top functions."""
    lines = [
        f"command: python -m scripts.bench.profile --threads {args.threads} --repeats {args.repeats} "
        f"(perf record -F {SAMPLE_HZ} on the child while it reads a {prompt_tokens}-token prompt {args.repeats} times)"
    ]
    for build, profile in profiles.items():
        lines.append(
            f"{build}: {profile['prompt_tokens_per_s']:.1f} prompt tok/s while recorded; {profile['llama_system_info']}"
        )
    names = list(dict.fromkeys(group for profile in profiles.values() for group in profile["groups"]))
    lines += aligned_lines(
        ["share of prompt samples", *profiles],
        [[name, *(f"{profile['groups'].get(name, 0.0):.1f}%" for profile in profiles.values())] for name in names],
        text_columns=1,
    )
    for build, profile in profiles.items():
        lines.append(f"top functions ({build}):")
        lines += [f"  {entry['percent']:5.1f}%  {entry['library']}  {entry['function']}" for entry in profile["top"]]
    return lines


if __name__ == "__main__":
    sys.exit(main())
