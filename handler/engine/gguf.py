"""GGUF probing: the KV cache types that suit a model and its quantization's name, as llama.cpp reads them.

Each function imports ``llama_cpp`` itself, when called: importing this module loads no llama.cpp library.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

# Values per block of each K cache type offered (llama.cpp cuts the K cache into per-head rows).
_KV_BLOCK_SIZE = {"f16": 1, "q8_0": 32}


def quantization_name(lib: Any, file_type: str | None) -> str | None:
    """The quantization named by a GGUF's ``general.file_type`` ("Q4_1"), as llama.cpp's constants spell it."""
    if file_type is None:
        return None
    names = {
        getattr(lib, name): name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_")
        for name in dir(lib)
        if name.startswith("LLAMA_FTYPE_") and name != "LLAMA_FTYPE_GUESSED"
    }
    try:
        return names.get(int(file_type), f"ftype {file_type}")
    except ValueError:
        return str(file_type)


def ggml_type(name: str) -> int:
    """llama.cpp's number for a KV cache type offered here ("f16", "q8_0")."""
    import llama_cpp

    return int(getattr(llama_cpp, f"GGML_TYPE_{name.upper()}"))


def ggml_type_name(value: int) -> str:
    """The name of a KV cache type offered here, from llama.cpp's number (the number itself for others)."""
    return next((name for name in _KV_BLOCK_SIZE if ggml_type(name) == value), str(value))


def kv_cache_type_k(path: Path, requested: str) -> str:
    """The K cache type for this model: ``requested`` when each attention head's K row is whole blocks of it.

    A quantized K cache is read per head; with a head size that is not a multiple of the block size
    llama.cpp computes wrong attention scores without any error (measured on generated models: logits
    off by up to 0.65 with 16-value heads, 0.006 with 32-value heads), so such models keep f16.
    """
    block = _KV_BLOCK_SIZE[requested]
    if block == 1:
        return requested
    head_size = _key_head_size(path)
    return requested if head_size is not None and head_size % block == 0 else "f16"


def _key_head_size(path: Path) -> int | None:
    """Values per attention head in the K cache, from the GGUF metadata (None when it cannot be read)."""
    import llama_cpp

    # llama-cpp-python prints llama.cpp's log through this logger; Llama(verbose=False) sets the same level.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # metadata and vocabulary only: tens of milliseconds, no weights
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        return None
    buffer = ctypes.create_string_buffer(256)

    def metadata(key: str) -> int | None:
        if llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer)) < 0:
            return None
        try:
            return int(buffer.value)
        except ValueError:  # per-layer arrays and the like: not a single size
            return None

    try:
        if llama_cpp.llama_model_meta_val_str(model, b"general.architecture", buffer, len(buffer)) < 0:
            return None
        arch = buffer.value.decode("utf-8", errors="replace")
        key_length = metadata(f"{arch}.attention.key_length")
        if key_length is not None:
            return key_length
        embedding, heads = metadata(f"{arch}.embedding_length"), metadata(f"{arch}.attention.head_count")
        return embedding // heads if embedding and heads else None
    finally:
        llama_cpp.llama_model_free(model)
