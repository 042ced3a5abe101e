"""Prefill's ceiling: the cores' measured int8 dot-product throughput against the multiply-adds a prompt token needs.

Reading a prompt is compute bound: every token multiplies every weight matrix once, as an int8 dot product
(llama.cpp quantizes the activations to 8 bits and multiplies them with the 4-bit weights unpacked to bytes). So
the ceiling of prompt tokens per second is the int8 multiply-adds the cores can retire per second over the
multiply-adds one token needs. The first is measured, not read from a data sheet: scripts/bench/kernels/int8_dot.c
runs the instruction each build's Q4_K matrix kernel uses (vpmaddubsw on 256 bits for the AVX2 build, on 512 bits
for the AVX-512 one) and AVX512-VNNI's vpdpbusd (the fastest int8 instruction of such a CPU, which the Q4_K kernel
does not use), on one thread and on the benchmark's threads, in registers only. The second comes from the GGUF
header. Their quotient, beside the measured prompt speed, is prefill's share of the limit, as (c)/(d) is decode's.

Attention's own products (query by keys, weights by values: f16/f32, growing with the context) are left out of the
ceiling and reported beside it: at the seed prompt's length they are about 1% of the weights' work.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.bench.runner import cpu_flags
from scripts.repository import ROOT

KERNEL_SOURCE = Path(__file__).parent / "kernels" / "int8_dot.c"
KERNEL_BUILD_DIR = ROOT / "build" / "bench-kernels"
#: Seconds each measurement runs for (best of RUNS): long enough to leave timer noise and frequency ramps behind.
KERNEL_SECONDS = 0.5
RUNS = 3


@dataclass(frozen=True)
class Int8Kernel:
    """One function of int8_dot.c: its vector width, the CPU flags it needs, the instructions it issues."""

    bytes_per_vector: int
    cpu_flags: tuple[str, ...]
    instructions: str


KERNELS = {
    "maddubs_avx2": Int8Kernel(32, ("avx2",), "vpmaddubsw + vpaddw, 256-bit"),
    "maddubs_avx512": Int8Kernel(64, ("avx512f", "avx512bw"), "vpmaddubsw + vpaddw, 512-bit"),
    "dpbusd_avx512": Int8Kernel(64, ("avx512f", "avx512bw", "avx512_vnni"), "vpdpbusd, 512-bit (AVX512-VNNI)"),
}
#: The kernel whose instructions each build's repacked Q4_K GEMM runs (ggml-cpu/arch/x86/repack.cpp,
#: ggml_gemm_q4_K_8x8_q8_K: _mm256_maddubs_epi16 on AVX2, _mm512_maddubs_epi16 with AVX-512, VNNI or not).
KERNEL_OF_BUILD = {"avx2": "maddubs_avx2", "avx512": "maddubs_avx512"}
#: Accumulator chains per iteration in int8_dot.c (its TWELVE macro).
CHAINS = 12


def compile_kernels(build_dir: Path = KERNEL_BUILD_DIR) -> Path:
    """int8_dot.c as a shared library, compiled once per source text and compiler (``CC``, else ``cc``)."""
    compiler = os.environ.get("CC", "cc")
    source = KERNEL_SOURCE.read_bytes()
    key = hashlib.sha256(source + compiler.encode()).hexdigest()[:12]
    library = build_dir / f"int8_dot-{key}.so"
    if not library.is_file():
        build_dir.mkdir(parents=True, exist_ok=True)
        partial = library.with_suffix(".partial")
        # -O2 as llama.cpp's Release build; each function names its own instruction set (target attributes).
        subprocess.run(
            [compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(KERNEL_SOURCE)],
            check=True,
            capture_output=True,
        )
        partial.replace(library)
    return library


def _measure(function: Any, kernel: Int8Kernel, threads: int, pool: ThreadPoolExecutor) -> float:
    """Byte products per second of ``function`` on ``threads`` threads at once (ctypes frees the GIL), best of RUNS."""
    products_per_iteration = CHAINS * kernel.bytes_per_vector
    # Calibrate the iterations to KERNEL_SECONDS on one thread.
    iterations = 1_000_000
    started = time.perf_counter()
    function(iterations, 1)
    elapsed = time.perf_counter() - started
    iterations = max(iterations, int(iterations * KERNEL_SECONDS / max(elapsed, 1e-6)))
    best = 0.0
    for run in range(RUNS):
        started = time.perf_counter()
        list(pool.map(lambda seed: function(iterations, seed), [run + thread for thread in range(threads)]))
        elapsed = time.perf_counter() - started
        best = max(best, threads * iterations * products_per_iteration / elapsed)
    return best


def measure_int8_peak(threads: int) -> dict[str, Any]:
    """Each kernel this CPU can run: billions of byte products (multiply-adds) a second, one thread and ``threads``."""
    library = ctypes.CDLL(str(compile_kernels()))
    flags = cpu_flags()
    measured: dict[str, Any] = {}
    with ThreadPoolExecutor(threads) as pool:
        for name, kernel in KERNELS.items():
            missing = [flag for flag in kernel.cpu_flags if flag not in flags]
            if missing:
                measured[name] = {"skipped": f"this CPU lacks {', '.join(missing)}"}
                continue
            function = getattr(library, name)
            function.restype = ctypes.c_int64
            function.argtypes = [ctypes.c_int64, ctypes.c_int8]
            measured[name] = {
                "instructions": kernel.instructions,
                "g_macs_per_s": {
                    str(count): round(_measure(function, kernel, count, pool) / 1e9, 1)
                    for count in sorted({1, threads})
                },
            }
    return {"threads": threads, "kernels": measured}


def child_int8_peak(spec: dict[str, Any]) -> dict[str, Any]:
    """(p) The int8 peak, in a child of its own like (d): nothing of llama.cpp loaded, nothing else running."""
    return measure_int8_peak(spec["threads"])


def weight_macs_per_token(model: Path) -> dict[str, int]:
    """Multiply-adds of one prompt token's matrix products, from the GGUF header.

    Every weight matrix of the layers and the output matrix (token_embd when the model ties it to the output)
    multiplies the token once; token_embd as the input is a row lookup, no product. Also attention's products per
    context position (query by key and weight by value, every layer and head), to be scaled by the context.
    """
    import gguf

    reader = gguf.GGUFReader(model)
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")

    def field(key: str) -> int:
        value = reader.fields[key]
        return int(value.parts[value.data[0]][0])

    shapes = {tensor.name: [int(n) for n in tensor.shape] for tensor in reader.tensors}
    matrices = sum(
        int(shape[0]) * int(shape[1])
        for name, shape in shapes.items()
        if len(shape) >= 2 and name.endswith(".weight") and name != "token_embd.weight"
    )
    if "output.weight" not in shapes:  # tied: the embedding matrix is the output matrix too
        embd = shapes["token_embd.weight"]
        matrices += embd[0] * embd[1]
    n_head = field(f"{arch}.attention.head_count")
    key_length_key = f"{arch}.attention.key_length"
    head_dim = field(key_length_key) if key_length_key in reader.fields else field(f"{arch}.embedding_length") // n_head
    return {
        "weight_macs_per_token": matrices,
        "attention_macs_per_position": 2 * field(f"{arch}.block_count") * n_head * head_dim,
    }


def prefill_limit(
    peak: dict[str, Any], macs: dict[str, int], build: str, prompt_tokens_per_s: float, prompt_tokens: int
) -> dict[str, Any] | None:
    """The ceiling of ``build`` (tokens a second at its kernel's measured peak) and the measured speed's share of it."""
    name = KERNEL_OF_BUILD.get(build)
    entry = peak["kernels"].get(name or "", {})
    rates = entry.get("g_macs_per_s")
    if not rates:
        return None
    threads = str(peak["threads"])
    per_token = macs["weight_macs_per_token"]
    ceiling = rates[threads] * 1e9 / per_token
    achieved = prompt_tokens_per_s * per_token / 1e9
    # The average query of a prompt attends to half of it.
    attention = macs["attention_macs_per_position"] * prompt_tokens / 2
    vnni = peak["kernels"].get("dpbusd_avx512", {}).get("g_macs_per_s")
    return {
        "build": build,
        "kernel": name,
        "instructions": entry["instructions"],
        "peak_g_macs_per_s": rates[threads],
        "peak_g_macs_per_s_one_thread": rates["1"],
        "ceiling_tokens_per_s": round(ceiling, 2),
        "prompt_tokens_per_s": prompt_tokens_per_s,
        "achieved_g_macs_per_s": round(achieved, 1),
        "share": round(prompt_tokens_per_s / ceiling, 3),
        "attention_share_of_work": round(attention / per_token, 4),
        "vnni_ceiling_tokens_per_s": round(vnni[threads] * 1e9 / per_token, 2) if vnni else None,
    }


def limit_line(limit: dict[str, Any], label: str) -> str:
    """One line of the report: the ceiling, the measured speed, the share."""
    vnni = limit["vnni_ceiling_tokens_per_s"]
    return (
        f"prefill roofline ({label}, {limit['build']} build): {limit['peak_g_macs_per_s']:.0f} G int8 multiply-adds/s "
        f"({limit['instructions']}; 1 thread {limit['peak_g_macs_per_s_one_thread']:.0f}) -> ceiling "
        f"{limit['ceiling_tokens_per_s']:.1f} prompt tok/s; measured {limit['prompt_tokens_per_s']:.1f} tok/s = "
        f"{limit['share']:.0%} of it ({limit['achieved_g_macs_per_s']:.0f} G/s)"
        + (f"; vpdpbusd would allow {vnni:.1f}" if vnni else "")
    )
