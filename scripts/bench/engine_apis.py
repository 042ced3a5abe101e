"""Two llama.cpp engines behind one small interface, so one loop measures both: the shipped llama.cpp and ik_llama.cpp.

The shipped engine is llama-cpp-python's ctypes binding of mainline llama.cpp (the package, or another build's
libraries through LLAMA_CPP_LIB_PATH). ik_llama.cpp's C API follows the fork, not mainline: other model and context
parameter structures (a ``repack_tensors`` switch among them), ``llama_kv_cache_clear`` instead of the memory API,
no sampler chain. The ctypes declarations of that API come from the ``ik-llama-cpp-python`` sdist the fork is built
from (its ``ik_llama_cpp/_ctypes_api.py``, MIT; scripts/builds/ik_llama.py unpacks it), loaded with the built
``libllama.so`` through its IK_LLAMA_CPP_LIB_PATH variable: this module declares nothing of the fork's layout itself.

Both sides do the same work per call: a batch of tokens at given positions, logits for the last one only; the caller
takes the argmax itself (numpy), so neither side's sampler is in the comparison.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from scripts.bench.configs import quiet_llama_logs

#: ggml's type ids of the K cache types the engine uses (ggml.h: GGML_TYPE_F16 = 1, GGML_TYPE_Q8_0 = 8).
GGML_TYPES = {"f16": 1, "q8_0": 8}
N_BATCH = 512


class EngineApi(Protocol):
    """What the measuring loop needs of an engine."""

    name: str

    def load(self, model: Path, n_ctx: int, threads: int, type_k: str) -> None: ...

    def decode(self, tokens: list[int], first_position: int) -> np.ndarray: ...

    def clear(self) -> None: ...

    def system_info(self) -> str: ...


class MainlineApi:
    """The shipped llama.cpp through llama-cpp-python's C bindings, set as the service's engine sets it."""

    name = "llama.cpp"

    def __init__(self) -> None:
        import llama_cpp

        quiet_llama_logs()
        self.lib = llama_cpp
        self.ctx: Any = None
        self.n_vocab = 0
        self.batch: Any = None

    def load(self, model: Path, n_ctx: int, threads: int, type_k: str) -> None:
        lib = self.lib
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        model_params.load_mode = lib.LLAMA_LOAD_MODE_MMAP
        loaded = lib.llama_model_load_from_file(str(model).encode(), model_params)
        params = context_params(lib, n_ctx, threads, type_k)
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx, self.n_vocab, self.batch = open_context(lib, loaded, params, model)

    def decode(self, tokens: list[int], first_position: int) -> np.ndarray:
        return decode_last(self.lib, self.ctx, self.batch, self.n_vocab, tokens, first_position)

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)

    def system_info(self) -> str:
        return str(self.lib.llama_print_system_info().decode("utf-8", errors="replace").strip())


class IkApi:
    """ik_llama.cpp through the sdist's ctypes declarations, with the shipped engine's settings where both have them.

    ``repack`` is the fork's run-time repacking (``-rtr`` in its tools): the weights are rearranged for its
    kernels at load, which needs a private copy of them, so memory mapping is off then.
    """

    name = "ik_llama.cpp"

    def __init__(self, build_dir: Path, binding_root: Path, repack: bool = False) -> None:
        self.library = build_dir / "lib" / "libllama.so"
        os.environ["IK_LLAMA_CPP_LIB_PATH"] = str(self.library)
        sys.path.insert(0, str(binding_root))
        self.lib = importlib.import_module("ik_llama_cpp._ctypes_api")
        self.repack = repack
        self.ctx: Any = None
        self.n_vocab = 0
        self.batch: Any = None
        if repack:
            self.name = "ik_llama.cpp rtr"

    def load(self, model: Path, n_ctx: int, threads: int, type_k: str) -> None:
        lib = self.lib
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        model_params.use_mmap = not self.repack
        model_params.repack_tensors = self.repack
        loaded = lib.llama_model_load_from_file(str(model).encode(), model_params)
        params = context_params(lib, n_ctx, threads, type_k)
        params.flash_attn = False
        self.ctx, self.n_vocab, self.batch = open_context(lib, loaded, params, model)

    def decode(self, tokens: list[int], first_position: int) -> np.ndarray:
        return decode_last(self.lib, self.ctx, self.batch, self.n_vocab, tokens, first_position)

    def clear(self) -> None:
        self.lib.llama_kv_cache_clear(self.ctx)

    def system_info(self) -> str:
        # The binding does not declare it; the library (already loaded: the same handle) has it.
        function = ctypes.CDLL(str(self.library)).llama_print_system_info
        function.restype = ctypes.c_char_p
        return str(function().decode("utf-8", errors="replace").strip())


def context_params(lib: Any, n_ctx: int, threads: int, type_k: str) -> Any:
    """The context settings both engines share (their structures differ, these fields are named alike)."""
    params = lib.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = N_BATCH
    params.n_ubatch = N_BATCH
    params.n_threads = threads
    params.n_threads_batch = threads
    params.type_k = GGML_TYPES[type_k]
    return params


def open_context(lib: Any, model: Any, params: Any, path: Path) -> tuple[Any, int, Any]:
    """The context, the vocabulary's size and a batch of N_BATCH tokens for one sequence."""
    ctx = lib.llama_init_from_model(model, params)
    if not model or not ctx:
        raise RuntimeError(f"could not load {path} or create its context")
    return ctx, lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model)), lib.llama_batch_init(N_BATCH, 0, 1)


def decode_last(lib: Any, ctx: Any, batch: Any, n_vocab: int, tokens: list[int], first_position: int) -> np.ndarray:
    """One call of llama_decode on ``tokens``; the last token's logits (a view of the engine's buffer)."""
    fill_batch(batch, tokens, first_position)
    if lib.llama_decode(ctx, batch) != 0:
        raise RuntimeError("llama_decode failed")
    return np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, len(tokens) - 1), shape=(n_vocab,))


def fill_batch(batch: Any, tokens: list[int], first_position: int) -> None:
    """One sequence's tokens at consecutive positions, logits for the last one: the same batch for both engines."""
    if len(tokens) > N_BATCH:
        raise ValueError(f"at most {N_BATCH} tokens per call, not {len(tokens)}")
    batch.n_tokens = len(tokens)
    for index, token in enumerate(tokens):
        batch.token[index] = token
        batch.pos[index] = first_position + index
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = 0
        batch.logits[index] = index == len(tokens) - 1
