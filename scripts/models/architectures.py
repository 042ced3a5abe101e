"""The tensors and ``<arch>.*`` keys llama.cpp's loader expects of a model, per architecture.

One ``Architecture`` object per llama.cpp architecture the generator writes (``phi3``, ``llama``, ``qwen2``,
``qwen3``): it lists a model's tensors (names from gguf's ``TENSOR_NAMES``, numpy shapes, that is ggml's ``ne``
reversed, and each tensor's role) and writes its hyperparameter keys. The architectures differ only in a few
switches (fused QKV and gate/up matrices, QKV biases, per-head Q/K norms), so they are data, not code. The
values drawn into the tensors are random_model.py's business.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import gguf


@dataclass(frozen=True)
class Hyperparameters:
    """A model's shapes and the numeric settings its GGUF declares under ``<arch>.*``."""

    #: llama.cpp's architecture name: a key of ARCHITECTURES.
    arch: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    #: Values per attention head; None: ``n_embd // n_head``. Qwen3-4B's 128 (for 2560 / 32 = 80) makes its
    #: Q projection 4096 wide, wider than the residual stream.
    head_dim: int | None = None
    #: No output.weight: llama.cpp multiplies by token_embd for the logits, as Qwen's and SmolLM2's files do.
    tied_embeddings: bool = False
    n_ctx_train: int = 4096
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5

    @property
    def n_embd_head(self) -> int:
        """Values per attention head."""
        return self.head_dim if self.head_dim is not None else self.n_embd // self.n_head

    @property
    def n_embd_q(self) -> int:
        """Width of the Q projection (and of the attention output's input): all heads."""
        return self.n_embd_head * self.n_head

    @property
    def n_embd_kv(self) -> int:
        """Width of the K and of the V projection: the KV heads (fewer than the Q heads under GQA)."""
        return self.n_embd_head * self.n_head_kv


class TensorRole(Enum):
    """What a tensor is for: it decides the values the generator draws into it."""

    EMBEDDING = "embedding"  # token_embd: one row per token, gathered (and the output matrix when tied)
    OUTPUT = "output"  # output.weight: one row per token, multiplied by the last hidden state
    MATRIX = "matrix"  # a projection, its input dimension last
    NORM = "norm"  # an RMS norm's weight
    BIAS = "bias"  # a projection's bias


@dataclass(frozen=True)
class TensorLayout:
    """One tensor of a model: its GGUF name, numpy shape (ggml ne reversed) and role."""

    name: str
    shape: tuple[int, ...]
    role: TensorRole

    @property
    def n_values(self) -> int:
        """Parameters it holds."""
        count = 1
        for dimension in self.shape:
            count *= dimension
        return count


@dataclass(frozen=True)
class Architecture:
    """How one llama.cpp architecture lays its tensors out and which keys it declares."""

    arch: gguf.MODEL_ARCH
    #: One attn_qkv matrix (Q, K and V rows stacked) instead of attn_q, attn_k and attn_v (phi3).
    fused_qkv: bool = False
    #: One ffn_up matrix of 2 * n_ff rows (gate, then up) and no ffn_gate (phi3).
    fused_gate_up: bool = False
    #: attn_q, attn_k and attn_v have biases (qwen2).
    qkv_bias: bool = False
    #: RMS norms of n_embd_head values over each Q and K head, before RoPE (qwen3).
    qk_norm: bool = False
    #: Declares rope.scaling.original_context_length (phi3, whose converter writes it).
    declares_original_context: bool = False

    @property
    def name(self) -> str:
        """llama.cpp's name of the architecture (general.architecture)."""
        return gguf.MODEL_ARCH_NAMES[self.arch]

    def tensors(self, hp: Hyperparameters, n_vocab: int) -> Iterator[TensorLayout]:
        """The model's tensors in file order, as llama.cpp's loader creates them for this architecture."""
        names = gguf.TENSOR_NAMES
        t = gguf.MODEL_TENSOR
        d = hp.n_embd
        role = TensorRole

        def weight(tensor: gguf.MODEL_TENSOR, shape: tuple[int, ...], kind: TensorRole, layer: int) -> TensorLayout:
            return TensorLayout(names[tensor].format(bid=layer) + ".weight", shape, kind)

        yield weight(t.TOKEN_EMBD, (n_vocab, d), role.EMBEDDING, 0)
        for i in range(hp.n_layer):
            yield weight(t.ATTN_NORM, (d,), role.NORM, i)
            if self.fused_qkv:
                yield weight(t.ATTN_QKV, (hp.n_embd_q + 2 * hp.n_embd_kv, d), role.MATRIX, i)
            else:
                for tensor, width in ((t.ATTN_Q, hp.n_embd_q), (t.ATTN_K, hp.n_embd_kv), (t.ATTN_V, hp.n_embd_kv)):
                    yield weight(tensor, (width, d), role.MATRIX, i)
                    if self.qkv_bias:
                        yield TensorLayout(names[tensor].format(bid=i) + ".bias", (width,), role.BIAS)
            if self.qk_norm:
                yield weight(t.ATTN_Q_NORM, (hp.n_embd_head,), role.NORM, i)
                yield weight(t.ATTN_K_NORM, (hp.n_embd_head,), role.NORM, i)
            yield weight(t.ATTN_OUT, (d, hp.n_embd_q), role.MATRIX, i)
            yield weight(t.FFN_NORM, (d,), role.NORM, i)
            if self.fused_gate_up:
                # llama.cpp splits the 2 * n_ff rows in half: gate, then up.
                yield weight(t.FFN_UP, (2 * hp.n_ff, d), role.MATRIX, i)
            else:
                yield weight(t.FFN_GATE, (hp.n_ff, d), role.MATRIX, i)
                yield weight(t.FFN_UP, (hp.n_ff, d), role.MATRIX, i)
            yield weight(t.FFN_DOWN, (d, hp.n_ff), role.MATRIX, i)
        yield weight(t.OUTPUT_NORM, (d,), role.NORM, 0)
        if not hp.tied_embeddings:
            yield weight(t.OUTPUT, (n_vocab, d), role.OUTPUT, 0)

    def write_hyperparameters(self, writer: gguf.GGUFWriter, hp: Hyperparameters) -> None:
        """The ``<arch>.*`` keys of the model (``writer`` was made for this architecture)."""
        writer.add_context_length(hp.n_ctx_train)
        if self.declares_original_context:
            writer.add_rope_scaling_orig_ctx_len(hp.n_ctx_train)
        writer.add_embedding_length(hp.n_embd)
        writer.add_feed_forward_length(hp.n_ff)
        writer.add_block_count(hp.n_layer)
        writer.add_head_count(hp.n_head)
        writer.add_head_count_kv(hp.n_head_kv)
        # Without these keys llama.cpp takes n_embd / n_head values per head.
        if hp.n_embd_head != hp.n_embd // hp.n_head:
            writer.add_key_length(hp.n_embd_head)
            writer.add_value_length(hp.n_embd_head)
        writer.add_layer_norm_rms_eps(hp.rms_eps)
        writer.add_rope_dimension_count(hp.n_embd_head)
        writer.add_rope_freq_base(hp.rope_freq_base)


ARCHITECTURES: dict[str, Architecture] = {
    architecture.name: architecture
    for architecture in (
        Architecture(gguf.MODEL_ARCH.PHI3, fused_qkv=True, fused_gate_up=True, declares_original_context=True),
        Architecture(gguf.MODEL_ARCH.LLAMA),
        Architecture(gguf.MODEL_ARCH.QWEN2, qkv_bias=True),
        Architecture(gguf.MODEL_ARCH.QWEN3, qk_norm=True),
    )
}
