"""The prefill roofline's arithmetic, the cost projection and the profile's grouping: pure functions, no model."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.bench import cost
from scripts.bench.prefill_roofline import KERNEL_OF_BUILD, KERNELS, prefill_limit
from scripts.bench.profile import group_of, summarize_profile

PEAK = {
    "threads": 2,
    "kernels": {
        "maddubs_avx2": {"instructions": "vpmaddubsw", "g_macs_per_s": {"1": 150.0, "2": 300.0}},
        "maddubs_avx512": {"instructions": "vpmaddubsw 512", "g_macs_per_s": {"1": 300.0, "2": 600.0}},
        "dpbusd_avx512": {"instructions": "vpdpbusd", "g_macs_per_s": {"1": 600.0, "2": 1200.0}},
    },
}
MACS = {"weight_macs_per_token": 3_000_000_000, "attention_macs_per_position": 200_000}


def test_prefill_ceiling_is_the_peak_over_the_work_of_a_token() -> None:
    limit = prefill_limit(PEAK, MACS, "avx2", prompt_tokens_per_s=25.0, prompt_tokens=368)
    assert limit is not None
    assert limit["ceiling_tokens_per_s"] == pytest.approx(100.0)  # 300e9 / 3e9
    assert limit["share"] == pytest.approx(0.25)
    assert limit["achieved_g_macs_per_s"] == pytest.approx(75.0)
    assert limit["vnni_ceiling_tokens_per_s"] == pytest.approx(400.0)
    # Half the prompt's positions, on average, times the attention work per position, over a token's weight work.
    assert limit["attention_share_of_work"] == pytest.approx(200_000 * 184 / 3e9, abs=1e-4)


def test_each_build_is_measured_with_its_own_kernel() -> None:
    avx512 = prefill_limit(PEAK, MACS, "avx512", prompt_tokens_per_s=50.0, prompt_tokens=368)
    assert avx512 is not None
    assert avx512["kernel"] == "maddubs_avx512"
    assert avx512["ceiling_tokens_per_s"] == pytest.approx(200.0)
    assert set(KERNEL_OF_BUILD.values()) <= set(KERNELS)


def test_no_ceiling_where_the_cpu_could_not_run_the_kernel() -> None:
    skipped = {"threads": 2, "kernels": {"maddubs_avx512": {"skipped": "this CPU lacks avx512bw"}}}
    assert prefill_limit(skipped, MACS, "avx512", 30.0, 368) is None
    assert prefill_limit(PEAK, MACS, "neon", 30.0, 368) is None


def table_row(
    model: str, build: str, prompt: float, decode: float, prompt_ratio: float, decode_ratio: float
) -> dict[str, Any]:
    return {
        "engine": "llama.cpp",
        "file": model,
        "build": build,
        "prompt_tokens_per_s": prompt,
        "decode_tokens_per_s": decode,
        "prompt_ratio": prompt_ratio,
        "decode_ratio": decode_ratio,
    }


def test_the_anchor_costs_what_the_phi3_projection_says() -> None:
    table = [
        table_row("phi3", "avx2", 20.0, 9.0, 1.0, 1.0),
        table_row("phi3", "avx512", 30.0, 9.0, 1.0, 1.0),
        table_row("small", "avx2", 40.0, 18.0, 2.0, 2.0),
        table_row("small", "avx512", 60.0, 18.0, 2.0, 2.0),
    ]
    anchor, small = cost.menu_costs(table, "phi3")
    base = cost.phi3_seconds()
    assert anchor["seconds"]["avx2_host"] == pytest.approx(base["prompt_avx2"] + base["decode_drafting"], abs=0.05)
    # AVX-512's prompt gain is the anchor's own measured one (30 / 20).
    expected_avx512 = base["prompt_avx2"] / 1.5 + base["decode_drafting"]
    assert anchor["seconds"]["avx512_host"] == pytest.approx(expected_avx512, abs=0.05)
    # Twice as fast in both phases: half the seconds, about half the dollars.
    assert small["seconds"]["avx2_host"] == pytest.approx(anchor["seconds"]["avx2_host"] / 2, abs=0.1)
    assert small["dollars_per_1000"]["x86_avx2_host"] < anchor["dollars_per_1000"]["x86_avx2_host"] / 1.9
    dollars = anchor["dollars_per_1000"]["x86_avx2_host"]
    assert dollars == pytest.approx(1000 * (anchor["seconds"]["avx2_host"] * 10 * cost.X86_GB_S + cost.REQUEST), 0.01)
    assert anchor["dollars_per_1000"]["arm64_projected"] < dollars
    lines = cost.cost_lines([anchor, small])
    assert lines[0].startswith("| model |")
    assert len(lines) == 4


def test_drafting_is_planned_at_its_low_end() -> None:
    base = cost.phi3_seconds()
    assert cost.DRAFTING_GAIN_PLANNED < cost.DRAFTING_GAIN_HIGH
    assert base["decode_drafting"] > base["decode_drafting_high"]


@pytest.mark.parametrize(
    ("library", "function", "group"),
    [
        (
            "libggml-cpu.so.0",
            "void ggml::cpu::repack::gemm<block_q4_K, 8l, 8l, (ggml_type)15>(int, float*)",
            "matmul, repacked",
        ),
        ("libggml-cpu.so.0", "ggml_vec_dot_q6_K_q8_K", "matmul, Q6_K"),
        ("libggml-cpu.so.0", "ggml_barrier", "thread waits"),
        ("libggml-cpu.so.0", "quantize_row_q8_K", "quantizing activations"),
        ("libggml-cpu.so.0", "ggml_compute_forward_soft_max", "attention"),
        ("libggml-cpu.so.0", "ggml_compute_forward_rms_norm_mul_fused", "norms"),
        ("libggml-cpu.so.0", "0x00000000000e607b", "unnamed in libggml-cpu"),
        ("[kernel.kallsyms]", "finish_task_switch.isra.0", "kernel"),
        ("python3.11", "_PyEval_EvalFrameDefault", "other (Python, libc)"),
    ],
)
def test_profile_groups(library: str, function: str, group: str) -> None:
    assert group_of(library, function).startswith(group)


def test_profile_summary_adds_shares_by_group() -> None:
    rows = [(40.0, "libggml-cpu.so", "ggml_barrier"), (35.0, "libggml-cpu.so", "ggml_vec_dot_q6_K_q8_K")]
    rows.append((25.0, "libggml-cpu.so", "ggml_vec_dot_q6_K_q8_K_generic"))
    summary = summarize_profile(rows)
    assert summary["groups"]["matmul, Q6_K weights (not repacked: dot products)"] == 60.0
    assert summary["top"][0]["function"] == "ggml_barrier"
