"""The loaded model: its weights and main context as the settings ask, llama.cpp's handles to them, and the lock
every decode holds.

Both decoders work on these handles: the single-request decoder in the main context, the batch decoder in a
context of its own made from the same weights and parameters.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handler.core.errors import ModelLoadError
from handler.core.settings import Settings
from handler.engine.gguf import ggml_type, ggml_type_name

if TYPE_CHECKING:
    from llama_cpp import Llama


class LoadedModel:
    """A model loaded by llama-cpp-python, with what the engine's parts read from it."""

    def __init__(self, llama: Llama, n_threads: int) -> None:
        import llama_cpp

        self.llama = llama
        #: The llama.cpp bindings (the ``llama_cpp`` module), through which every low-level call goes.
        self.lib: Any = llama_cpp
        #: The main context, where one request at a time is decoded.
        self.ctx: Any = llama._ctx.ctx
        self.n_ctx = llama.n_ctx()
        self.n_batch = llama.n_batch
        self.n_threads = n_threads
        #: The K cache type in use (the batch context copies the main context's parameters).
        self.kv_cache_type_k = ggml_type_name(llama.context_params.type_k)
        #: Held by every use of a context: llama.cpp's contexts are not for two threads at once.
        self.lock = threading.Lock()


def load_model(path: Path, settings: Settings, type_k: str) -> LoadedModel:
    """The model's weights and main context as the settings ask, with a K cache of ``type_k``; errors say which
    file and why. The caller picks the llama.cpp build before this first imports ``llama_cpp``."""
    import llama_cpp

    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            n_threads_batch=settings.threads_batch,
            n_batch=settings.n_batch,
            n_ubatch=settings.n_ubatch,
            use_mmap=settings.use_mmap,
            type_k=ggml_type(type_k),
            flash_attn=settings.flash_attn,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"llama.cpp could not load {path.name}: {exc}") from exc
    # Close before interpreter shutdown tears down the ctypes bindings the model's finalizer needs.
    atexit.register(llama.close)
    return LoadedModel(llama, settings.n_threads)


def put_token(batch: Any, i: int, token: int, position: int, seq: int, logits: bool) -> None:
    """Token ``i`` of a llama_batch: its position, its one sequence, whether its logits are kept."""
    batch.token[i] = token
    batch.pos[i] = position
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = logits
