"""Write a tiny, deterministic phi3 GGUF that stands in for Phi-3-mini-4k-instruct in tests.

The weights are random, so the text it generates is gibberish; what matters is that llama.cpp
loads it through the same code paths as the real model: the ``phi3`` architecture, a
SentencePiece (``llama``) vocabulary with byte fallback, Phi-3's special tokens and chat template.

Usage: ``python scripts/make_test_model.py --out PATH [--preset tiny]``
"""

from __future__ import annotations

import argparse
import hashlib
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Phi-3's added tokens, in its order (ids 32000..32010 in the real vocabulary).
PHI3_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
)

SPM_SPACE = "\u2581"  # "▁": SentencePiece's marker for a preceding space

# Common English words (each becomes a "▁word" piece) and word endings, as whitespace-separated text.
COMMON_WORDS = """
the of and to in is was for on that with as by at from it be are this an or which his
her he she they we you not but have had has were their been one all would there can more
if no out so what up about when into than them its only some other time new also two
first may after over most such these used many then any where made well between could
through before because each very those both under year years people state world day
how our way even back good much work life part great still own see make use just long
last high little small large old right left man men woman women child children water
city house home school name number system data model models text language word words
token tokens generate generated generation request response service function value
values result results test tests example input output server client error errors
question answer hello world please thank thanks help write read list story poem
Gradient Descent gradient descent learning machine neural network train training loss
function optimization parameter parameters step rate weight weights update minimum
explain simple simply step steps three four five ten hundred thousand number numbers
cloud Lambda lambda memory timeout batch job jobs queue table record records sentence
short summary summarize translate Japanese English French code Python program
"""

COMMON_SUFFIXES = """
ing ed er ers es ly tion tions ment ness able al ity ous ive est ful less ize ise
th he in an re on at en nd ti or te of is it ar st to
"""


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


# A "phi3-mini" preset (3072 hidden, 32 layers, 32 heads, 8192 ffn, vocab 32064, Q4_0) would go
# here too; it also needs a 32064-token vocabulary, which the tiny word list does not provide.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(n_embd=64, n_layer=2, n_head=4, n_head_kv=4, n_ff=128),
}


@dataclass
class Vocab:
    """A SentencePiece vocabulary as the three parallel GGUF arrays."""

    tokens: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[gguf.TokenType] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    def add(self, text: str, score: float, token_type: gguf.TokenType) -> None:
        """Append a token unless its text is already there."""
        if text not in self.ids:
            self.ids[text] = len(self.tokens)
            self.tokens.append(text)
            self.scores.append(score)
            self.types.append(token_type)


def _normal_pieces() -> Iterator[str]:
    """Normal pieces, each preceded by its prefixes.

    llama.cpp's SPM tokenizer only merges adjacent symbols whose concatenation is itself a
    piece, so a long piece is reachable only if a chain of shorter ones leads to it.
    """
    yield SPM_SPACE
    for c in string.printable[:94]:  # the printable ASCII characters except whitespace
        yield c
        yield SPM_SPACE + c
    for piece in [SPM_SPACE + w for w in COMMON_WORDS.split()] + COMMON_SUFFIXES.split():
        for end in range(2, len(piece) + 1):
            yield piece[:end]


def build_vocab() -> Vocab:
    """Byte-fallback vocabulary laid out like Phi-3's: unk, bos, eos, bytes, pieces, specials."""
    vocab = Vocab()
    vocab.add("<unk>", 0.0, gguf.TokenType.UNKNOWN)
    vocab.add("<s>", 0.0, gguf.TokenType.CONTROL)
    vocab.add("</s>", 0.0, gguf.TokenType.CONTROL)
    for byte in range(256):
        vocab.add(f"<0x{byte:02X}>", 0.0, gguf.TokenType.BYTE)
    for piece in _normal_pieces():
        # Merges with higher scores happen first, so longer pieces win.
        vocab.add(piece, float(len(piece)), gguf.TokenType.NORMAL)
    for special in PHI3_SPECIAL_TOKENS:
        vocab.add(special, 0.0, gguf.TokenType.CONTROL)
    return vocab


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


def make_model(out: Path, preset: str = "tiny") -> Path:
    """Write the model of ``preset`` to ``out`` (creating parent folders) and return ``out``."""
    p = PRESETS[preset]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab()
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
    for name, data in _weights(p, normal_mask):
        _add_tensor(writer, name, data, p.weight_type)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Write a tiny deterministic phi3 GGUF test model.")
    parser.add_argument("--out", type=Path, required=True, help="GGUF file to write")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    args = parser.parse_args(argv)
    path = make_model(args.out, args.preset)
    print(f"{path} {path.stat().st_size} bytes sha256={sha256_of(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
