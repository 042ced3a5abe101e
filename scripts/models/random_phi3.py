"""Write a deterministic phi3 GGUF that stands in for Phi-3-mini-4k-instruct in tests and benchmarks.

The weights are random, so the text it generates is gibberish; what matters is that llama.cpp
loads it through the same code paths as the real model: the ``phi3`` architecture, a
SentencePiece (``llama``) vocabulary with byte fallback, Phi-3's special tokens and chat template.

Presets: ``tiny`` (under 1 MB, for tests) and ``phi3-mini`` (Phi-3-mini's exact shapes and
32064-token vocabulary in F16, 7.6 GB, for speed measurements). With ``--quantize Q4_K_M`` the
F16 model is written beside ``--out`` and quantized into it by llama.cpp's own quantizer, so each
tensor gets the type llama.cpp gives it in a real model of the architecture (Q4_K_M, the type of
Phi-3-mini-4k-instruct-q4.gguf: Q4_K, with Q6_K for the output matrix and for half the layers' QKV
and FFN-down matrices); the F16 file is deleted afterwards. The benchmark's model:
``--preset phi3-mini --quantize Q4_K_M`` (2,396,832,640 bytes; the published q4 file has 2,393,231,072).

Usage: ``python -m scripts.models.random_phi3 --out PATH [--preset tiny|phi3-mini] [--quantize Q4_K_M]``
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from handler.core.files import file_sha256
from scripts.models.phi3_vocab import PHI3_CHAT_TEMPLATE, build_vocab


@dataclass(frozen=True)
class Preset:
    """Shapes and numeric settings of one generated model."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int = 4096
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5
    weight_type: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32
    file_type: gguf.LlamaFileType = gguf.LlamaFileType.ALL_F32
    init_std: float = 0.5
    seed: int = 1234
    #: None: the word-list vocabulary as it is; else padded to this size in Phi-3's layout.
    n_vocab: int | None = None
    #: Type of output.weight; None: ``weight_type``.
    output_type: gguf.GGMLQuantizationType | None = None
    #: Declare every tensor first, then draw and write one tensor at a time (F16 or F32 weights):
    #: memory stays at one tensor, however large the model.
    streamed: bool = False


PRESETS: dict[str, Preset] = {
    # Heads of 32 values, like Phi-3's 96, a multiple of the quantized K cache's block of 32.
    "tiny": Preset(n_embd=64, n_layer=2, n_head=2, n_head_kv=2, n_ff=128),
    # Heads of 16 values: a quantized K cache cannot be cut per head (tests of the f16 fallback).
    "tiny-16-value-heads": Preset(n_embd=64, n_layer=2, n_head=4, n_head_kv=4, n_ff=128),
    # Phi-3-mini-4k-instruct's shapes in F16, the input of llama.cpp's quantizer (see quantize):
    # quantized to Q4_K_M, as the real q4 file is, it is the benchmark's model.
    "phi3-mini": Preset(
        n_embd=3072,
        n_layer=32,
        n_head=32,
        n_head_kv=32,
        n_ff=8192,
        n_vocab=32064,
        weight_type=gguf.GGMLQuantizationType.F16,
        file_type=gguf.LlamaFileType.MOSTLY_F16,
        streamed=True,
    ),
}


def _weights(preset: Preset, normal_mask: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Tensors named and shaped as llama.cpp's phi3 loader expects (numpy shape = ggml ne reversed)."""
    rng = np.random.default_rng(preset.seed)
    n_vocab = len(normal_mask)
    d = preset.n_embd
    head_dim = d // preset.n_head
    n_embd_gqa = head_dim * preset.n_head_kv
    names = gguf.TENSOR_NAMES
    t = gguf.MODEL_TENSOR

    def normal(*shape: int, std: float) -> np.ndarray:
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    # Scaled by fan-in so activations stay O(1) and logits vary from token to token.
    proj_std = preset.init_std / np.sqrt(d)
    yield names[t.TOKEN_EMBD] + ".weight", normal(n_vocab, d, std=preset.init_std)
    for i in range(preset.n_layer):
        yield names[t.ATTN_NORM].format(bid=i) + ".weight", np.ones(d, dtype=np.float32)
        yield names[t.ATTN_QKV].format(bid=i) + ".weight", normal(d + 2 * n_embd_gqa, d, std=proj_std)
        yield names[t.ATTN_OUT].format(bid=i) + ".weight", normal(d, d, std=proj_std)
        yield names[t.FFN_NORM].format(bid=i) + ".weight", np.ones(d, dtype=np.float32)
        # Fused gate and up projections: llama.cpp splits the 2*n_ff rows in half.
        yield names[t.FFN_UP].format(bid=i) + ".weight", normal(2 * preset.n_ff, d, std=proj_std)
        yield (
            names[t.FFN_DOWN].format(bid=i) + ".weight",
            normal(d, preset.n_ff, std=preset.init_std / np.sqrt(preset.n_ff)),
        )
    yield names[t.OUTPUT_NORM] + ".weight", np.ones(d, dtype=np.float32)
    output = normal(n_vocab, d, std=preset.init_std * 4 / np.sqrt(d))
    # Near-zero logits for byte, control and unknown tokens keep sampled text mostly printable
    # and ending at max_tokens, as a trained model's would, while EOG tokens stay reachable.
    output[~normal_mask] *= 0.1
    yield names[t.OUTPUT] + ".weight", output


def _add_tensor(writer: gguf.GGUFWriter, name: str, data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> None:
    # Norms (1-D) stay F32, as llama.cpp's own converters and quantizers keep them.
    if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, data)
    elif qtype == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, data.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


@dataclass(frozen=True)
class _TensorSpec:
    """A tensor to draw: name, numpy shape (ggml ne reversed), type and target std."""

    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    std: float = 0.0
    #: Scale of each row's weights (output rows of non-text tokens); None: all 1.
    row_scale: np.ndarray | None = None


def _tensor_specs(preset: Preset, normal_mask: np.ndarray) -> Iterator[_TensorSpec]:
    """The tensors of ``_weights``, in the same order and with the same spreads, as specs."""
    n_vocab = len(normal_mask)
    d = preset.n_embd
    n_embd_gqa = d // preset.n_head * preset.n_head_kv
    names = gguf.TENSOR_NAMES
    t = gguf.MODEL_TENSOR
    f32 = gguf.GGMLQuantizationType.F32
    weight = preset.weight_type
    proj_std = preset.init_std / np.sqrt(d)
    yield _TensorSpec(names[t.TOKEN_EMBD] + ".weight", (n_vocab, d), weight, preset.init_std)
    for i in range(preset.n_layer):
        yield _TensorSpec(names[t.ATTN_NORM].format(bid=i) + ".weight", (d,), f32)
        yield _TensorSpec(names[t.ATTN_QKV].format(bid=i) + ".weight", (d + 2 * n_embd_gqa, d), weight, proj_std)
        yield _TensorSpec(names[t.ATTN_OUT].format(bid=i) + ".weight", (d, d), weight, proj_std)
        yield _TensorSpec(names[t.FFN_NORM].format(bid=i) + ".weight", (d,), f32)
        yield _TensorSpec(names[t.FFN_UP].format(bid=i) + ".weight", (2 * preset.n_ff, d), weight, proj_std)
        down_std = preset.init_std / np.sqrt(preset.n_ff)
        yield _TensorSpec(names[t.FFN_DOWN].format(bid=i) + ".weight", (d, preset.n_ff), weight, down_std)
    yield _TensorSpec(names[t.OUTPUT_NORM] + ".weight", (d,), f32)
    row_scale = np.where(normal_mask, 1.0, 0.1)  # as in _weights: near-zero logits for non-text tokens
    output_std = preset.init_std * 4 / np.sqrt(d)
    output_type = preset.output_type or weight
    yield _TensorSpec(names[t.OUTPUT] + ".weight", (n_vocab, d), output_type, output_std, row_scale)


_STREAMED_DTYPES = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}


def _random_values(rng: np.random.Generator, spec: _TensorSpec) -> np.ndarray:
    """The tensor's values: ones for norms (1-D, F32), else normal with the target spread (finite, checked)."""
    dtype = _STREAMED_DTYPES[spec.qtype]
    if len(spec.shape) == 1:
        return np.ones(spec.shape, dtype=dtype)
    values = rng.standard_normal(spec.shape, dtype=np.float32)
    values *= np.float32(spec.std)
    if spec.row_scale is not None:
        values *= spec.row_scale.astype(np.float32)[:, None]
    cast = values.astype(dtype)
    # The quantizer fails on (or silently spreads) NaN and inf; F16's range is far above these spreads.
    if not np.isfinite(cast).all():
        raise ValueError(f"{spec.name}: random values not finite in {spec.qtype.name}")
    return cast


def _write_streamed(writer: gguf.GGUFWriter, preset: Preset, normal_mask: np.ndarray) -> None:
    """Declare every tensor, then draw and write them one at a time: memory stays at one tensor."""
    rng = np.random.default_rng(preset.seed)
    specs = list(_tensor_specs(preset, normal_mask))
    for spec in specs:
        if spec.qtype not in _STREAMED_DTYPES:
            kind = spec.qtype.name
            raise ValueError(f"{spec.name}: streamed tensors are F32 or F16 (llama.cpp quantizes), not {kind}")
        dtype = np.dtype(_STREAMED_DTYPES[spec.qtype])
        writer.add_tensor_info(spec.name, spec.shape, dtype, int(np.prod(spec.shape)) * dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for spec in specs:
        writer.write_tensor_data(_random_values(rng, spec))


def make_model(out: Path, preset: str = "tiny") -> Path:
    """Write the model of ``preset`` to ``out`` (creating parent folders) and return ``out``."""
    p = PRESETS[preset]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(p.n_vocab)
    eos_id = vocab.ids["<|endoftext|>"]
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.PHI3]

    writer = gguf.GGUFWriter(out, arch)
    # llama.cpp gives special tokens Phi-3's rstrip attribute (eating the "\n" after "<|user|>")
    # only when general.name contains "phi3" or "phi-3", as the real model's name does.
    writer.add_name(f"phi3-test-{preset}")
    writer.add_file_type(p.file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_context_length(p.n_ctx_train)
    writer.add_rope_scaling_orig_ctx_len(p.n_ctx_train)
    writer.add_embedding_length(p.n_embd)
    writer.add_feed_forward_length(p.n_ff)
    writer.add_block_count(p.n_layer)
    writer.add_head_count(p.n_head)
    writer.add_head_count_kv(p.n_head_kv)
    writer.add_layer_norm_rms_eps(p.rms_eps)
    writer.add_rope_dimension_count(p.n_embd // p.n_head)
    writer.add_rope_freq_base(p.rope_freq_base)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_bos_token_id(vocab.ids["<s>"])
    writer.add_eos_token_id(eos_id)
    writer.add_unk_token_id(vocab.ids["<unk>"])
    writer.add_pad_token_id(eos_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(PHI3_CHAT_TEMPLATE)

    normal_mask = np.array([t == gguf.TokenType.NORMAL for t in vocab.types])
    if p.streamed:
        _write_streamed(writer, p, normal_mask)
    else:
        for name, data in _weights(p, normal_mask):
            _add_tensor(writer, name, data, p.weight_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    writer.close()
    return out


def quantize(source: Path, out: Path, quantization: str = "Q4_K_M", threads: int | None = None) -> None:
    """Quantize an F16/F32 GGUF with llama.cpp's own quantizer (``llama_model_quantize``, as llama-quantize).

    ``quantization`` is a llama_ftype name without ``LLAMA_FTYPE_MOSTLY_`` (Q4_K_M, Q4_0, Q8_0, ...);
    llama.cpp picks each tensor's type for it as it does for a real model of the architecture.
    Threads: ``threads``, else every CPU this process may run on.
    """
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quantization.upper()}", None)
    if not isinstance(ftype, int):
        raise ValueError(f"llama.cpp has no file type {quantization!r} (LLAMA_FTYPE_MOSTLY_{quantization.upper()})")
    # llama-cpp-python prints llama.cpp's log (a line per tensor here) until its logger is told otherwise.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or len(os.sched_getaffinity(0))
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source} to {quantization} (status {status})")


def make_quantized_model(
    out: Path, preset: str = "phi3-mini", quantization: str = "Q4_K_M", threads: int | None = None
) -> dict[str, float]:
    """Write ``preset`` (F16) beside ``out``, quantize it into ``out`` with llama.cpp, delete the F16 file.

    Both files are written under temporary names (``.f16.partial``, ``.partial``): ``out`` appears only
    complete, and an interrupted run leaves no file that looks finished. Returns the seconds each step took.
    """
    if PRESETS[preset].weight_type not in _STREAMED_DTYPES:
        raise ValueError(f"preset {preset} is {PRESETS[preset].weight_type.name}: llama.cpp quantizes F16 or F32")
    out = Path(out)
    source = out.with_name(out.name + ".f16.partial")
    partial = out.with_name(out.name + ".partial")
    try:
        started = time.perf_counter()
        make_model(source, preset)
        generated = time.perf_counter()
        quantize(source, partial, quantization, threads)
        quantized = time.perf_counter()
        partial.replace(out)
    finally:
        source.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return {"generation_s": round(generated - started, 1), "quantization_s": round(quantized - generated, 1)}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Write a deterministic phi3 GGUF test model.")
    parser.add_argument("--out", type=Path, required=True, help="GGUF file to write")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument(
        "--quantize",
        metavar="TYPE",
        help="write the preset beside OUT and quantize it into OUT with llama.cpp (e.g. Q4_K_M), then delete it",
    )
    args = parser.parse_args(argv)
    if args.quantize:
        timings = make_quantized_model(args.out, args.preset, args.quantize)
        print(f"generated in {timings['generation_s']:.0f} s, quantized in {timings['quantization_s']:.0f} s")
        path = Path(args.out)
    else:
        path = make_model(args.out, args.preset)
    print(f"{path} {path.stat().st_size} bytes sha256={file_sha256(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
