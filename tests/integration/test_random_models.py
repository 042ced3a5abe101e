"""The generated tiny models of every architecture (scripts/models/random_model.py) as llama.cpp reads them: they
load, declare their shapes, compute finite logits that differ from token to token, quantize with llama.cpp's own
quantizer, and the benchmark reads their layout (scripts/bench/model.py).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from scripts.bench.model import model_layout
from scripts.models.phi3_vocab import CHATML_CHAT_TEMPLATE, PHI3_CHAT_TEMPLATE
from scripts.models.random_model import PRESETS, make_model, make_quantized_model, tensor_layouts

TINY_PRESETS = sorted(name for name in PRESETS if name.startswith("tiny"))


def _last_logits(model: Path, text: bytes) -> np.ndarray:
    """The next-token logits after ``text``, from a plain llama.cpp load."""
    llm = llama_cpp.Llama(str(model), n_ctx=256, verbose=False, logits_all=True)
    tokens = llm.tokenize(text, add_bos=True)
    llm.eval(tokens)
    return np.array(llm.scores[len(tokens) - 1])


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_make_model_tiny_presets_load_in_llama_cpp_with_their_shapes(preset: str, tmp_path: Path) -> None:
    # GIVEN a tiny preset of one architecture, written to a file
    model = make_model(tmp_path / f"{preset}.gguf", preset)
    hp = PRESETS[preset].model

    # WHEN llama.cpp loads it and reads a few tokens
    llm = llama_cpp.Llama(str(model), n_ctx=256, verbose=False, logits_all=True)
    tokens = llm.tokenize(b"Gradient descent explained in simple words", add_bos=True)
    llm.eval(tokens)
    logits = np.array(llm.scores[len(tokens) - 1])

    # THEN it is small, declares the preset's architecture and shapes, and its logits are finite and varied
    assert model.stat().st_size < 1_000_000
    assert llm.metadata["general.architecture"] == hp.arch
    assert llm.n_embd() == hp.n_embd
    assert llm.n_vocab() == next(t.shape[0] for t in tensor_layouts(preset) if t.name == "token_embd.weight")
    assert int(llm.metadata[f"{hp.arch}.attention.head_count_kv"]) == hp.n_head_kv
    assert np.isfinite(logits).all()
    assert logits.std() > 0.1


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_make_model_writes_the_listed_tensors_and_the_architectures_chat_template(preset: str, tmp_path: Path) -> None:
    # GIVEN a tiny preset written to a file
    model = make_model(tmp_path / f"{preset}.gguf", preset)

    # WHEN its header is read back
    reader = gguf.GGUFReader(model)
    written = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    template_field = reader.fields["tokenizer.chat_template"]
    template = bytes(template_field.parts[template_field.data[0]]).decode("utf-8")

    # THEN it holds exactly the listed tensors (numpy shapes: ggml's reversed), and phi3 keeps Phi-3's template
    assert written == {layout.name: layout.shape for layout in tensor_layouts(preset)}
    expected = PHI3_CHAT_TEMPLATE if PRESETS[preset].model.arch == "phi3" else CHATML_CHAT_TEMPLATE
    assert template == expected


def test_make_model_chatml_models_end_turns_with_im_end(tmp_path: Path) -> None:
    # GIVEN a tiny qwen3 model, with ChatML's template and tokens
    model = make_model(tmp_path / "qwen3.gguf", "tiny-qwen3")
    llm = llama_cpp.Llama(str(model), n_ctx=256, verbose=False)

    # WHEN its special tokens are tokenized
    im_start = llm.tokenize(b"<|im_start|>", add_bos=False, special=True)
    im_end = llm.tokenize(b"<|im_end|>", add_bos=False, special=True)

    # THEN each is one token, and <|im_end|> is the end of sequence
    assert len(im_start) == 1
    assert im_end == [llm.token_eos()]


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen3"])
def test_make_model_is_deterministic(preset: str, tmp_path: Path) -> None:
    first = make_model(tmp_path / "first.gguf", preset).read_bytes()
    second = make_model(tmp_path / "second.gguf", preset).read_bytes()

    assert first == second


def test_make_quantized_model_tiny_qwen3_quantizes_to_q4_k_m_and_still_computes(tmp_path: Path) -> None:
    # GIVEN the tiny qwen3 preset (rows of 64 values: llama.cpp falls back from k-quants' 256-value blocks)
    out = tmp_path / "tiny-qwen3-q4_k_m.gguf"

    # WHEN it is written in F16 and quantized by llama.cpp
    make_quantized_model(out, "tiny-qwen3", "Q4_K_M", threads=1)

    # THEN only the quantized file is left, it says Q4_K_M, and its logits are finite and varied
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    layout = model_layout(out)
    assert layout["file_type"] == "Q4_K_M"
    assert set(layout["bytes_by_type"]) - {"F32"}  # the matrices are quantized, whatever the fallback
    logits = _last_logits(out, b"hello world")
    assert np.isfinite(logits).all()
    assert logits.std() > 0.1


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_model_layout_counts_kv_heads_and_tied_embeddings(preset: str, tmp_path: Path) -> None:
    # GIVEN a tiny preset written to a file
    model = make_model(tmp_path / f"{preset}.gguf", preset)
    hp = PRESETS[preset].model

    # WHEN the benchmark reads its layout
    layout = model_layout(model)

    # THEN K values per position count the KV heads of head_dim values, and a tied token_embd is read as the output
    assert layout["architecture"] == hp.arch
    assert layout["head_dim"] == hp.n_embd_head
    assert layout["kv_values_per_position"] == hp.n_layer * hp.n_head_kv * hp.n_embd_head
    assert layout["tied_embeddings"] == hp.tied_embeddings
    if hp.tied_embeddings:
        assert layout["weight_bytes_per_token"] > layout["tensor_bytes"]
        assert layout["output_type"] == layout["token_embd_type"]
    else:
        assert layout["weight_bytes_per_token"] < layout["tensor_bytes"]
