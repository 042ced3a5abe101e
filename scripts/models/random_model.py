"""Write deterministic random-weight GGUF models with the exact shapes of real ones, for tests and benchmarks.

The weights are random, so the text they generate is gibberish; what matters is that llama.cpp loads
them through the same code paths as the real models: the architecture's graph (``phi3``, ``llama``,
``qwen2`` or ``qwen3``, laid out by architectures.py) at the real model's shapes. Speed depends on
shapes, not values. Every model gets phi3_vocab's SentencePiece (``llama``) vocabulary with byte
fallback, padded to the real model's vocabulary size: the tokenizer's kind does not change the
speed of a forward pass, only the rows of the embedding and output matrices do. phi3 models get
Phi-3's chat template; the others a neutral ChatML one with its two special tokens.

Presets (PRESETS, one table): ``tiny``, ``tiny-16-value-heads``, ``tiny-llama``, ``tiny-qwen2`` and
``tiny-qwen3`` (under 1 MB, for tests), and in F16 the exact shapes of ``phi3-mini``
(Phi-3-mini-4k-instruct, 7.6 GB), ``qwen3-4b``, ``qwen3-1.7b``, ``qwen2.5-1.5b`` and
``smollm2-1.7b`` (for speed measurements). With ``--quantize Q4_K_M`` the F16 model is written
beside ``--out`` and quantized into it by llama.cpp's own quantizer, so each tensor gets the type
llama.cpp gives it in a real model of the architecture (Q4_K_M, the type of
Phi-3-mini-4k-instruct-q4.gguf: Q4_K, with Q6_K for the output matrix and for half the layers' QKV
and FFN-down matrices); the F16 file is deleted afterwards. The benchmark's model:
``--preset phi3-mini --quantize Q4_K_M`` (2,396,832,640 bytes; the published q4 file has 2,393,231,072).

Usage: ``python -m scripts.models.random_model --out PATH [--preset NAME] [--quantize Q4_K_M]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from handler.core.files import file_sha256
from scripts.models.architectures import ARCHITECTURES, Hyperparameters, TensorLayout, TensorRole
from scripts.models.phi3_vocab import CHATML_CHAT, PHI3_CHAT, ChatFormat, build_vocab
from scripts.models.quantizer import quantize


@dataclass(frozen=True)
class Preset:
    """One generated model: its hyperparameters, vocabulary size, tensor types and random draw."""

    model: Hyperparameters
    weight_type: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32
    file_type: gguf.LlamaFileType = gguf.LlamaFileType.ALL_F32
    init_std: float = 0.5
    seed: int = 1234
    #: None: the word-list vocabulary as it is; else padded to this size in Phi-3's layout.
    n_vocab: int | None = None
    #: Type of output.weight (of token_embd when tied); None: ``weight_type``.
    output_type: gguf.GGMLQuantizationType | None = None
    #: Declare every tensor first, then draw and write one tensor at a time (F16 or F32 weights):
    #: memory stays at one tensor, however large the model.
    streamed: bool = False

    @property
    def chat(self) -> ChatFormat:
        """Phi-3's chat format for phi3 models, ChatML for the others."""
        return PHI3_CHAT if self.model.arch == "phi3" else CHATML_CHAT


def _measured(model: Hyperparameters, n_vocab: int) -> Preset:
    """A real model's shapes in F16, streamed: the input of llama.cpp's quantizer for speed measurements."""
    return Preset(
        model,
        n_vocab=n_vocab,
        weight_type=gguf.GGMLQuantizationType.F16,
        file_type=gguf.LlamaFileType.MOSTLY_F16,
        streamed=True,
    )


def _tiny(model: Hyperparameters) -> Preset:
    """A test model under 1 MB in F16, written like the measured ones (streamed)."""
    return Preset(
        model,
        weight_type=gguf.GGMLQuantizationType.F16,
        file_type=gguf.LlamaFileType.MOSTLY_F16,
        streamed=True,
    )


# The real models' figures come from their config.json (hidden_size, num_hidden_layers, num_attention_heads,
# num_key_value_heads, head_dim, intermediate_size, vocab_size, tie_word_embeddings, rope_theta,
# rms_norm_eps, max_position_embeddings).
PRESETS: dict[str, Preset] = {
    # Heads of 32 values, like Phi-3's 96, a multiple of the quantized K cache's block of 32.
    "tiny": Preset(Hyperparameters("phi3", n_embd=64, n_layer=2, n_head=2, n_head_kv=2, n_ff=128)),
    # Heads of 16 values: a quantized K cache cannot be cut per head (tests of the f16 fallback).
    "tiny-16-value-heads": Preset(Hyperparameters("phi3", n_embd=64, n_layer=2, n_head=4, n_head_kv=4, n_ff=128)),
    "tiny-llama": _tiny(
        Hyperparameters("llama", n_embd=64, n_layer=2, n_head=2, n_head_kv=2, n_ff=128, tied_embeddings=True)
    ),
    # GQA (2 Q heads per KV head) and QKV biases.
    "tiny-qwen2": _tiny(
        Hyperparameters("qwen2", n_embd=64, n_layer=2, n_head=2, n_head_kv=1, n_ff=128, tied_embeddings=True)
    ),
    # GQA, and heads wider than n_embd / n_head (Q is 128 wide for 64 embeddings), as in Qwen3-4B.
    "tiny-qwen3": _tiny(
        Hyperparameters(
            "qwen3", n_embd=64, n_layer=2, n_head=4, n_head_kv=2, head_dim=32, n_ff=128, tied_embeddings=True
        )
    ),
    # Slow on purpose (tens of milliseconds a token on one thread, and it never stops by itself): the fault tests
    # kill, pause or time out a process while it is generating.
    "slow-phi3": _tiny(Hyperparameters("phi3", n_embd=512, n_layer=4, n_head=16, n_head_kv=16, n_ff=1536)),
    # Phi-3-mini-4k-instruct's shapes in F16, the input of llama.cpp's quantizer (see quantize):
    # quantized to Q4_K_M, as the real q4 file is, it is the benchmark's model.
    "phi3-mini": _measured(
        Hyperparameters("phi3", n_embd=3072, n_layer=32, n_head=32, n_head_kv=32, n_ff=8192), n_vocab=32064
    ),
    "qwen3-4b": _measured(
        Hyperparameters(
            "qwen3",
            n_embd=2560,
            n_layer=36,
            n_head=32,
            n_head_kv=8,
            head_dim=128,
            n_ff=9728,
            tied_embeddings=True,
            n_ctx_train=40960,
            rope_freq_base=1e6,
            rms_eps=1e-6,
        ),
        n_vocab=151936,
    ),
    "qwen3-1.7b": _measured(
        Hyperparameters(
            "qwen3",
            n_embd=2048,
            n_layer=28,
            n_head=16,
            n_head_kv=8,
            head_dim=128,
            n_ff=6144,
            tied_embeddings=True,
            n_ctx_train=40960,
            rope_freq_base=1e6,
            rms_eps=1e-6,
        ),
        n_vocab=151936,
    ),
    "qwen2.5-1.5b": _measured(
        Hyperparameters(
            "qwen2",
            n_embd=1536,
            n_layer=28,
            n_head=12,
            n_head_kv=2,
            n_ff=8960,
            tied_embeddings=True,
            n_ctx_train=32768,
            rope_freq_base=1e6,
            rms_eps=1e-6,
        ),
        n_vocab=151936,
    ),
    "smollm2-1.7b": _measured(
        Hyperparameters(
            "llama",
            n_embd=2048,
            n_layer=24,
            n_head=32,
            n_head_kv=32,
            n_ff=8192,
            tied_embeddings=True,
            n_ctx_train=8192,
            rope_freq_base=130000.0,
            rms_eps=1e-5,
        ),
        n_vocab=49152,
    ),
}


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to draw: name, numpy shape (ggml ne reversed), type and target spread."""

    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    #: Standard deviation of normal values; 0: every value is ``fill``.
    std: float = 0.0
    #: The value of every element of a constant tensor: 1 for norm weights, 0 for biases.
    fill: float = 1.0
    #: Scale of each row's weights (output rows of non-text tokens); None: all 1.
    row_scale: np.ndarray | None = None


def tensor_layouts(preset: str) -> list[TensorLayout]:
    """The preset's tensors (names, shapes, roles) without drawing or writing anything."""
    p = PRESETS[preset]
    n_vocab = p.n_vocab if p.n_vocab is not None else len(build_vocab(None, p.chat.added_specials).tokens)
    return list(ARCHITECTURES[p.model.arch].tensors(p.model, n_vocab))


def tensor_specs(preset: Preset, normal_mask: np.ndarray) -> Iterator[TensorSpec]:
    """The preset's tensors in file order, each with its type and spread.

    Projections are scaled by fan-in, so activations stay O(1) and logits vary from token to token.
    The output matrix (token_embd when tied) gives near-zero logits to byte, control, unknown and
    padding tokens: sampled text stays mostly printable and runs to max_tokens, as a trained
    model's would, while the end-of-generation tokens stay reachable.
    """
    hp = preset.model
    weight = preset.weight_type
    output_std = preset.init_std * 4 / np.sqrt(hp.n_embd)
    row_scale = np.where(normal_mask, 1.0, 0.1)
    f32 = gguf.GGMLQuantizationType.F32
    for layout in ARCHITECTURES[hp.arch].tensors(hp, len(normal_mask)):
        name, shape, role = layout.name, layout.shape, layout.role
        if role is TensorRole.NORM:
            yield TensorSpec(name, shape, f32)
        elif role is TensorRole.BIAS:
            yield TensorSpec(name, shape, f32, fill=0.0)
        elif role is TensorRole.MATRIX:
            yield TensorSpec(name, shape, weight, preset.init_std / np.sqrt(shape[1]))
        elif role is TensorRole.EMBEDDING and not hp.tied_embeddings:
            yield TensorSpec(name, shape, weight, preset.init_std)
        else:  # the output matrix: output.weight, or token_embd when tied
            yield TensorSpec(name, shape, preset.output_type or weight, output_std, row_scale=row_scale)


def _add_tensor(writer: gguf.GGUFWriter, spec: TensorSpec, data: np.ndarray) -> None:
    # Norms and biases (1-D) stay F32, as llama.cpp's own converters and quantizers keep them.
    if data.ndim == 1 or spec.qtype == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(spec.name, data)
    elif spec.qtype == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(spec.name, data.astype(np.float16))
    else:
        writer.add_tensor(spec.name, gguf.quants.quantize(data, spec.qtype), raw_dtype=spec.qtype)


def _in_memory_values(rng: np.random.Generator, spec: TensorSpec) -> np.ndarray:
    """The tensor's F32 values, drawn in float64 (the draw of the in-memory presets, whose files stay as they were)."""
    if spec.std == 0.0:
        return np.full(spec.shape, spec.fill, dtype=np.float32)
    values = rng.normal(0.0, spec.std, size=spec.shape).astype(np.float32)
    if spec.row_scale is not None:
        values *= spec.row_scale.astype(np.float32)[:, None]
    return values


def _write_in_memory(writer: gguf.GGUFWriter, preset: Preset, normal_mask: np.ndarray) -> None:
    """Draw every tensor, then write the file: small models only."""
    rng = np.random.default_rng(preset.seed)
    for spec in tensor_specs(preset, normal_mask):
        _add_tensor(writer, spec, _in_memory_values(rng, spec))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()


_STREAMED_DTYPES = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}


def _random_values(rng: np.random.Generator, spec: TensorSpec) -> np.ndarray:
    """The tensor's values: ``fill`` for constant tensors, else normal with the target spread (finite, checked)."""
    dtype = _STREAMED_DTYPES[spec.qtype]
    if spec.std == 0.0:
        return np.full(spec.shape, spec.fill, dtype=dtype)
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
    specs = list(tensor_specs(preset, normal_mask))
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
    chat = p.chat
    vocab = build_vocab(p.n_vocab, chat.added_specials)
    eos_id = vocab.ids[chat.eos]
    architecture = ARCHITECTURES[p.model.arch]

    writer = gguf.GGUFWriter(out, architecture.name)
    # llama.cpp gives special tokens Phi-3's rstrip attribute (eating the "\n" after "<|user|>")
    # only when general.name contains "phi3" or "phi-3", as the real model's name does.
    writer.add_name(f"{architecture.name}-test-{preset}")
    writer.add_file_type(p.file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    architecture.write_hyperparameters(writer, p.model)

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
    writer.add_chat_template(chat.template)

    normal_mask = np.array([t == gguf.TokenType.NORMAL for t in vocab.types])
    if p.streamed:
        _write_streamed(writer, p, normal_mask)
    else:
        _write_in_memory(writer, p, normal_mask)
    writer.close()
    return out


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
    parser = argparse.ArgumentParser(description="Write a deterministic random-weight GGUF model.")
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
