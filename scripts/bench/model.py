"""The benchmark's model: generated once with Phi-3-mini's shapes, its tensor layout, inputs of exact token counts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from handler.core.files import file_sha256
from scripts.bench.configs import (
    LONG_PROMPT_TOKENS,
    PRESET,
    QUANTIZATION,
    SEED_INSTRUCTION,
    SEED_PROMPT_TOKENS,
    quiet_llama_logs,
    seed_prompt,
)
from scripts.repository import ROOT


def ensure_model(path: Path) -> dict[str, Any]:
    """Generate the model once, and its sidecar.

    random_model writes the F16 model and the quantized one under temporary names and renames
    the quantized file into place when complete: an interrupted run leaves no half file at ``path``.
    """
    info: dict[str, Any] = {"path": str(path), "preset": PRESET, "quantization": QUANTIZATION, "generated_now": False}
    if not path.is_file():
        from scripts.models import random_model

        for suffix in (".f16.partial", ".partial"):  # left by an interrupted generation
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        print(
            f"generating {path} once: preset {PRESET} in F16 (7.6 GB, deleted afterwards), quantized to "
            f"{QUANTIZATION} by llama.cpp's quantizer ...",
            flush=True,
        )
        timings = random_model.make_quantized_model(path, PRESET, QUANTIZATION)
        print(f"generated in {timings['generation_s']:.0f} s, quantized in {timings['quantization_s']:.0f} s")
        info.update(generated_now=True, **timings)
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file() or sidecar.stat().st_mtime < path.stat().st_mtime:
        # The engine reads the hash from the sidecar; without it its load would include hashing 2 GB.
        sidecar.write_text(f"{file_sha256(path)}  {path.name}\n", encoding="utf-8")
    info["sha256"] = sidecar.read_text(encoding="utf-8").split()[0]
    info["bytes"] = path.stat().st_size
    return info


def tensor_bytes(type_name: str, shape: list[int]) -> int:
    """Bytes of a tensor of this ggml type and shape (ggml order: row length first), from its block size."""
    import gguf

    block_size, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    row_length = shape[0]
    if row_length % block_size:
        raise ValueError(f"a row of {row_length} values is not whole {type_name} blocks of {block_size}")
    return int(np.prod(shape[1:], dtype=np.int64)) * (row_length // block_size) * type_size


def model_layout(path: Path) -> dict[str, Any]:
    """Tensor types and bytes from the GGUF header: what one decoded token reads, and KV bytes per position.

    Bytes come from each tensor's own type (Q4_K_M mixes Q4_K, Q6_K and more, chosen per tensor by
    llama.cpp's quantizer) and shape; token_embd is only gathered, one row per token, unless the model
    has no output.weight (tied embeddings: llama.cpp multiplies by token_embd for the logits).
    """
    import gguf

    reader = gguf.GGUFReader(path)

    def field(key: str) -> int:
        value = reader.fields[key]
        return int(value.parts[value.data[0]][0])

    def text_field(key: str) -> str:
        value = reader.fields[key]
        return bytes(value.parts[value.data[0]]).decode("utf-8")

    arch = text_field("general.architecture")
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    n_layer = field(f"{arch}.block_count")
    n_embd = field(f"{arch}.embedding_length")
    n_head = field(f"{arch}.attention.head_count")
    n_head_kv = field(f"{arch}.attention.head_count_kv")
    # Qwen3-4B's heads hold 128 values, not n_embd / n_head = 80: the key says so where they differ.
    key_length = f"{arch}.attention.key_length"
    head_dim = field(key_length) if key_length in reader.fields else n_embd // n_head
    file_type = gguf.LlamaFileType(field("general.file_type")).name.removeprefix("MOSTLY_")
    tensors: dict[str, tuple[str, list[int]]] = {
        t.name: (t.tensor_type.name, [int(n) for n in t.shape]) for t in reader.tensors
    }
    sizes = {name: tensor_bytes(type_name, shape) for name, (type_name, shape) in tensors.items()}
    total = sum(sizes.values())
    types: dict[str, int] = {}
    counts: dict[str, int] = {}
    # Each kind of matrix (attn_qkv, ffn_down, ...) by type: which layers llama.cpp gave more bits.
    kinds: dict[str, dict[str, int]] = {}
    for name, (type_name, _) in tensors.items():
        types[type_name] = types.get(type_name, 0) + sizes[name]
        counts[type_name] = counts.get(type_name, 0) + 1
        kind = name.split(".")[-2] if name.startswith("blk.") else name.removesuffix(".weight")
        by_type = kinds.setdefault(kind, {})
        by_type[type_name] = by_type.get(type_name, 0) + 1
    embd_type, embd_shape = tensors["token_embd.weight"]
    embd_row_bytes = tensor_bytes(embd_type, embd_shape[:1])
    tied = "output.weight" not in tensors
    # Each decoded token gathers one row of token_embd and multiplies by the whole output matrix.
    embd_bytes_read = embd_row_bytes + (sizes["token_embd.weight"] if tied else 0)
    return {
        "architecture": arch,
        "n_vocab": n_vocab,
        "n_layer": n_layer,
        "n_embd": n_embd,
        "n_head": n_head,
        "n_head_kv": n_head_kv,
        "head_dim": head_dim,
        "file_type": file_type,
        "tensor_bytes": total,
        "bytes_by_type": types,
        "tensors_by_type": counts,
        "types_by_kind": kinds,
        "tied_embeddings": tied,
        "output_type": embd_type if tied else tensors["output.weight"][0],
        "token_embd_type": embd_type,
        "weight_bytes_per_token": total - sizes["token_embd.weight"] + embd_bytes_read,
        # K (and as many V) values per context position, all layers: the KV heads only under GQA.
        "kv_values_per_position": n_layer * n_head_kv * head_dim,
    }


# Bytes per value of the K cache types (q8_0: 32 int8 values and an f16 scale per block); V stays f16.
KV_BYTES_PER_VALUE = {"f16": 2.0, "q8_0": 34 / 32}


def kv_bytes_per_position(layout: dict[str, Any], type_k: str) -> int:
    """K and V cache bytes one context position adds to what each decoded token reads."""
    return int(layout["kv_values_per_position"] * (KV_BYTES_PER_VALUE[type_k] + KV_BYTES_PER_VALUE["f16"]))


def make_tokenizer(path: Path) -> Callable[[str], list[int]]:
    """The model's tokenizer as the seed's code uses it (BOS added, special tokens parsed)."""
    import llama_cpp

    quiet_llama_logs()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise SystemExit(f"error: llama.cpp cannot load {path}")
    vocab = llama_cpp.llama_model_get_vocab(model)

    def tokenize(text: str) -> list[int]:
        data = text.encode("utf-8")
        buffer = (llama_cpp.llama_token * (len(data) + 8))()
        count = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, len(buffer), True, True)
        return list(buffer[:count])

    return tokenize


def fit_text(text: str, target: int, count: Callable[[str], int]) -> str:
    """The text's words (repeated if short, cut if long) whose seed prompt comes closest to ``target`` tokens."""
    words = text.split()
    while count(" ".join(words)) < target:
        words += text.split()
    low, high = 1, len(words)  # the largest prefix whose prompt is at most the target
    while low < high:
        middle = (low + high + 1) // 2
        if count(" ".join(words[:middle])) <= target:
            low = middle
        else:
            high = middle - 1
    below, above = " ".join(words[:low]), " ".join(words[: low + 1])
    return above if abs(count(above) - target) < abs(count(below) - target) else below


def build_inputs(model: Path, quick: bool) -> dict[str, dict[str, Any]]:
    """The event's text fitted to the seed prompt's 368 tokens (and, in the full run, to 2,000 tokens)."""
    tokenize = make_tokenizer(model)
    event = json.loads((ROOT / "events" / "summarize.json").read_text(encoding="utf-8"))

    def count(text: str) -> int:
        return len(tokenize(seed_prompt(SEED_INSTRUCTION + text)))

    targets = (
        {"summarize": SEED_PROMPT_TOKENS} if quick else {"summarize": SEED_PROMPT_TOKENS, "long": LONG_PROMPT_TOKENS}
    )
    inputs: dict[str, dict[str, Any]] = {}
    for name, target in targets.items():
        text = fit_text(event["text"], target, count)
        prompt = seed_prompt(SEED_INSTRUCTION + text)
        tokens = tokenize(prompt)
        inputs[name] = {"target_tokens": target, "text": text, "prompt": prompt, "tokens": tokens}
        print(
            f"input {name}: {len(tokens)} prompt tokens (target {target}), {len(text.split())} words, {len(text)} chars"
        )
    print(f"the event's whole text gives a {count(event['text'])}-token seed prompt with this synthetic vocabulary")
    return inputs


def read_into_page_cache(path: Path) -> None:
    """Read the file once, so every child finds it in the page cache: none pays the disk read for the others."""
    with path.open("rb") as model_file:
        while model_file.read(8 << 20):
            pass
