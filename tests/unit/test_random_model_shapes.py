"""The generated models' shapes (scripts/models/random_model.py, architectures.py), listed without writing a file:
the real models' parameter counts, tensor names llama.cpp knows for each architecture, GQA and wide heads.
"""

from __future__ import annotations

import gguf
import pytest

from scripts.models.architectures import ARCHITECTURES, TensorLayout, TensorRole
from scripts.models.random_model import PRESETS, tensor_layouts

# Parameters of the real models, token embeddings included (tied: counted once), as their model cards round them.
KNOWN_PARAMETERS = {
    "phi3-mini": 3.82e9,
    "qwen3-4b": 4.02e9,
    "qwen3-1.7b": 1.72e9,
    "qwen2.5-1.5b": 1.54e9,
    "smollm2-1.7b": 1.71e9,
}

MEASURED_PRESETS = sorted(KNOWN_PARAMETERS)
#: The tests' own presets: the tiny ones, and the faults tier's slow one.
TINY_PRESETS = sorted(name for name in PRESETS if name.startswith(("tiny", "slow")))


def _by_name(preset: str) -> dict[str, TensorLayout]:
    return {layout.name: layout for layout in tensor_layouts(preset)}


@pytest.mark.parametrize("preset", MEASURED_PRESETS)
def test_tensor_layouts_measured_presets_hold_the_real_models_parameter_counts(preset: str) -> None:
    # GIVEN a preset with a real model's shapes
    # WHEN its tensors are listed (nothing is written)
    total = sum(layout.n_values for layout in tensor_layouts(preset))

    # THEN their parameters add up to the published count, to its rounding
    assert total == pytest.approx(KNOWN_PARAMETERS[preset], rel=0.005)


def test_measured_presets_cover_every_preset_that_is_not_tiny() -> None:
    assert sorted(set(PRESETS) - set(TINY_PRESETS)) == MEASURED_PRESETS


@pytest.mark.parametrize("preset", MEASURED_PRESETS)
def test_measured_presets_are_f16_and_streamed(preset: str) -> None:
    # The quantizer's input, written one tensor at a time: memory stays at one tensor for an 8 GB file.
    p = PRESETS[preset]
    assert p.weight_type == gguf.GGMLQuantizationType.F16
    assert p.streamed


@pytest.mark.parametrize("preset", MEASURED_PRESETS + TINY_PRESETS)
def test_tensor_layouts_names_are_the_architectures_own(preset: str) -> None:
    # GIVEN a preset's architecture and the tensors gguf declares for it
    arch = PRESETS[preset].model.arch
    known = gguf.MODEL_TENSORS[ARCHITECTURES[arch].arch]
    n_layer = PRESETS[preset].model.n_layer
    allowed = {
        gguf.TENSOR_NAMES[tensor].format(bid=layer) + suffix
        for tensor in known
        for layer in range(n_layer)
        for suffix in (".weight", ".bias")
    }

    # WHEN its tensors are listed
    names = [layout.name for layout in tensor_layouts(preset)]

    # THEN every name is one llama.cpp's loader knows for the architecture, and none repeats
    assert set(names) <= allowed
    assert len(names) == len(set(names))


def test_qwen3_4b_heads_are_wider_than_n_embd_over_n_head_and_kv_heads_are_grouped() -> None:
    # Qwen3-4B: 2560 embeddings, 32 Q heads and 8 KV heads of 128 values (not 2560 / 32 = 80).
    tensors = _by_name("qwen3-4b")

    assert tensors["blk.0.attn_q.weight"].shape == (32 * 128, 2560)
    assert tensors["blk.0.attn_k.weight"].shape == (8 * 128, 2560)
    assert tensors["blk.0.attn_v.weight"].shape == (8 * 128, 2560)
    assert tensors["blk.0.attn_output.weight"].shape == (2560, 32 * 128)
    assert tensors["blk.0.attn_q_norm.weight"].shape == (128,)
    assert tensors["blk.0.attn_k_norm.weight"].shape == (128,)
    assert tensors["blk.35.ffn_gate.weight"].shape == (9728, 2560)
    assert tensors["blk.35.ffn_down.weight"].shape == (2560, 9728)
    assert "blk.36.attn_q.weight" not in tensors
    assert tensors["token_embd.weight"].shape == (151936, 2560)


@pytest.mark.parametrize("preset", ["qwen3-4b", "qwen3-1.7b", "qwen2.5-1.5b", "smollm2-1.7b"])
def test_tied_presets_have_no_output_matrix_and_draw_token_embd_as_the_output(preset: str) -> None:
    tensors = _by_name(preset)

    assert "output.weight" not in tensors
    assert tensors["token_embd.weight"].role is TensorRole.EMBEDDING
    assert PRESETS[preset].model.tied_embeddings


def test_qwen2_5_1_5b_has_qkv_biases_and_two_kv_heads() -> None:
    tensors = _by_name("qwen2.5-1.5b")

    assert tensors["blk.0.attn_q.bias"].shape == (1536,)
    assert tensors["blk.0.attn_k.bias"].shape == (2 * 128,)
    assert tensors["blk.0.attn_v.bias"].shape == (2 * 128,)
    assert tensors["blk.0.attn_k.weight"].shape == (2 * 128, 1536)
    assert tensors["blk.27.attn_v.bias"].role is TensorRole.BIAS


def test_phi3_mini_keeps_fused_qkv_and_gate_up_and_its_own_output_matrix() -> None:
    tensors = _by_name("phi3-mini")

    assert tensors["blk.0.attn_qkv.weight"].shape == (3 * 3072, 3072)
    assert tensors["blk.0.ffn_up.weight"].shape == (2 * 8192, 3072)
    assert "blk.0.ffn_gate.weight" not in tensors
    assert tensors["output.weight"].shape == (32064, 3072)
    assert len(tensors) == 1 + 32 * 6 + 2


def test_smollm2_1_7b_is_llama_without_gqa() -> None:
    tensors = _by_name("smollm2-1.7b")

    assert PRESETS["smollm2-1.7b"].model.arch == "llama"
    assert tensors["blk.0.attn_k.weight"].shape == (2048, 2048)
    assert tensors["token_embd.weight"].shape == (49152, 2048)
    assert not any(name.endswith(".bias") or "attn_q_norm" in name or "attn_k_norm" in name for name in tensors)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_has_a_tiny_preset(arch: str) -> None:
    assert any(PRESETS[name].model.arch == arch for name in TINY_PRESETS)
