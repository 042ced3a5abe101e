"""The prompt-cost tools on real files: the int8 kernels compiled and run, a header's work per token, the engines'
loop, the sliding-window copy and a requantized variant of the tiny model (no speed is asserted)."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import pytest

from scripts.bench import prefill_roofline
from scripts.bench.engine_apis import MainlineApi
from scripts.bench.side_by_side import PHI3_SLIDING_WINDOW, child_side_by_side, greedy, requantized, with_sliding_window
from scripts.models.random_model import tensor_layouts


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_int8_kernels_compile_and_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefill_roofline, "KERNEL_BUILD_DIR", tmp_path)
    monkeypatch.setattr(prefill_roofline, "KERNEL_SECONDS", 0.01)
    measured = prefill_roofline.measure_int8_peak(2)
    assert measured["threads"] == 2
    assert set(measured["kernels"]) == set(prefill_roofline.KERNELS)
    avx2 = measured["kernels"]["maddubs_avx2"]  # every x86_64 host this project builds for has AVX2
    assert avx2["g_macs_per_s"]["1"] > 0
    assert avx2["g_macs_per_s"]["2"] > 0


def test_work_per_token_counts_every_matrix_but_the_embedding_lookup(tiny_model: Path) -> None:
    macs = prefill_roofline.weight_macs_per_token(tiny_model)
    matrices = [layout for layout in tensor_layouts("tiny") if len(layout.shape) == 2]
    expected = sum(shape[0] * shape[1] for shape in (m.shape for m in matrices if m.name != "token_embd.weight"))
    assert macs["weight_macs_per_token"] == expected
    # Two products (query by key, weight by value) per layer and head per context position: 2 layers, 64 values.
    assert macs["attention_macs_per_position"] == 2 * 2 * 64


def test_the_loop_generates_the_same_greedy_tokens_twice(tiny_model: Path) -> None:
    spec = {"engine": "llama.cpp", "model": str(tiny_model), "threads": 1, "type_k": "f16", "max_tokens": 12}
    first = child_side_by_side({**spec, "tokens": [1, 50, 60, 70, 80]})
    second = child_side_by_side({**spec, "tokens": [1, 50, 60, 70, 80]})
    assert first["decode_tokens"] == 12
    assert len(first["generated"]) == 12
    assert first["generated"] == second["generated"]
    assert first["prompt_tokens_per_s"] > 0
    answers = child_side_by_side({**spec, "prompts": [[1, 50, 60], [1, 70, 80, 90]]})["answers"]
    assert [len(answer) for answer in answers] == [12, 12]


def test_a_cleared_context_answers_as_a_fresh_one(tiny_model: Path) -> None:
    api = MainlineApi()
    api.load(tiny_model, 256, 1, "f16")
    first, _, _ = greedy(api, [1, 50, 60, 70], 8)
    api.clear()
    again, _, _ = greedy(api, [1, 50, 60, 70], 8)
    assert first == again


def test_sliding_window_copy_keeps_every_tensor_and_loads(tiny_model: Path, tmp_path: Path) -> None:
    copy = with_sliding_window(tiny_model, tmp_path / "swa.gguf")
    source, target = gguf.GGUFReader(tiny_model), gguf.GGUFReader(copy)
    field = target.fields["phi3.attention.sliding_window"]
    assert int(field.parts[field.data[0]][0]) == PHI3_SLIDING_WINDOW
    assert [t.name for t in source.tensors] == [t.name for t in target.tensors]
    assert all((a.data == b.data).all() for a, b in zip(source.tensors, target.tensors, strict=True))
    assert set(source.fields) - {"GGUF.kv_count"} <= set(target.fields)
    spec = {"engine": "llama.cpp", "model": str(copy), "threads": 1, "type_k": "f16", "max_tokens": 4}
    assert child_side_by_side({**spec, "tokens": [1, 50, 60]})["decode_tokens"] == 4


def test_requantized_variant_has_the_asked_type(tiny_model: Path, tmp_path: Path) -> None:
    variant = requantized(tiny_model, tmp_path / "q8.gguf", "Q8_0")
    types = {t.tensor_type.name for t in gguf.GGUFReader(variant).tensors if len(t.shape) == 2}
    assert types == {"Q8_0"}
